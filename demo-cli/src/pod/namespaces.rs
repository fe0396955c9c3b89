//! Pod tour step: whose namespaces do the pod's processes live in? In the host mode, the
//! host's: every process sees the host's pids, hostname and mounts. In the OCI mode, the
//! pod's: the containers join the pause process's pid, IPC and network namespaces (the CRI
//! plugin writes their paths, `/proc/<pause>/ns/...`, into each container's spec), and each
//! has mounts of its own: its image's root.

use anyhow::Result;
use serde_json::json;

use super::PodTour;
use crate::steps::{observed, Observed};

/// The namespaces shown, as `/proc/<pid>/ns/<kind>` names them.
const KINDS: [&str; 5] = ["pid", "ipc", "net", "uts", "mnt"];

/// The namespace `kind` of `pid` (`pid:[4026531836]`), or `?` when it cannot be read.
fn namespace(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|l| l.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The pid of `pid` in its own pid namespace (the last of `NSpid`).
fn pid_inside(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .unwrap_or(pid)
}

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let mut processes = vec![("pause".to_string(), tour.pause)];
    for (name, id) in tour.containers.clone() {
        processes.push((name, tour.cri()?.container_pid(&id).await?));
    }
    let host = std::process::id() as i32;
    tour.ui
        .command("readlink /proc/<pid>/ns/{pid,ipc,net,uts,mnt}; grep NSpid /proc/<pid>/status");
    let mut table = format!(
        "{:<10} {:>8} {:>7}  {}\n",
        "process",
        "host pid",
        "inside",
        KINDS.join("                 ")
    );
    let row = |name: &str, pid: i32| {
        let names: Vec<String> = KINDS.iter().map(|k| namespace(pid, k)).collect();
        format!(
            "{name:<10} {pid:>8} {:>7}  {}\n",
            pid_inside(pid),
            names.join(" ")
        )
    };
    table.push_str(&row("(host)", host));
    for (name, pid) in &processes {
        table.push_str(&row(name, *pid));
    }
    tour.ui.block(&table);
    let same = |a: i32, b: i32, kind: &str| namespace(a, kind) == namespace(b, kind);
    let containers = &processes[1..];
    if tour.oci {
        tour.check(
            containers.iter().all(|(_, pid)| {
                ["pid", "ipc", "net"]
                    .iter()
                    .all(|k| same(*pid, tour.pause, k))
            }),
            "the containers joined the pause process's pid, IPC and network namespaces",
        )?;
        tour.check(
            !same(tour.pause, host, "pid") && pid_inside(tour.pause) == 1,
            "in the pod's pid namespace the pause is pid 1, not a host pid",
        )?;
        tour.check(
            containers
                .iter()
                .all(|(_, pid)| !same(*pid, tour.pause, "mnt")),
            "each container has mounts of its own: its image's root",
        )?;
        tour.ui.notice(
            "the pod is a set of namespaces that the pause process holds; the CRI plugin writes \
             their paths into each container's spec, and runc joins them. (This pod has the \
             host's network, as every pod of the tour: with CNI the network namespace would be \
             the pod's own too.)",
        );
    } else {
        tour.check(
            processes
                .iter()
                .all(|(_, pid)| KINDS.iter().all(|k| same(*pid, host, k))),
            "every process of the pod is in the host's namespaces: it sees the host's pids, \
             hostname and mounts",
        )?;
        tour.ui.notice(
            "the host mode isolates nothing: run the same pod with `--handler sample-oci` \
             (`make demo-pod-oci`) and the containers join the pause's namespaces instead.",
        );
    }
    Ok(observed(json!({
        "oci": tour.oci,
        "pause_pid_inside": pid_inside(tour.pause),
        "shares_pause_pid_namespace": containers.iter().all(|(_, pid)| same(*pid, tour.pause, "pid")),
        "in_host_pid_namespace": same(tour.pause, host, "pid"),
    })))
}
