//! Walkthrough step: the process tree, as `ps -o ppid,pid,pgid,sid,args --forest` shows it.

use anyhow::{Context, Result};
use serde_json::json;

use super::{Observed, Tour};
use crate::proctree;

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    let pid = tour.pid as i32;
    let task = proctree::read(pid).context("the task's process is gone")?;
    let shim = proctree::read(task.ppid).context("the task's parent is gone")?;
    tour.shim = shim.pid;
    tour.ui.command(&format!(
        "ps -o ppid,pid,pgid,sid,args --forest -s {}",
        shim.sid
    ));
    tour.ui
        .block(&proctree::render(&proctree::tree(shim.pid), 90));
    tour.check(
        shim.command.contains("containerd-shim-sample-v2"),
        "the task's parent is the shim",
    )?;
    tour.check(
        shim.sid == shim.pid,
        "the shim leads a session of its own: it is detached from containerd",
    )?;
    tour.check(
        task.pgid == task.pid,
        "the task leads its own process group (PGID = its PID)",
    )?;
    // The cgroup the spec named (`/<namespace>/<id>`, as `ctr` names it), when the shim
    // could make it (as root, with cgroups mounted).
    let cgroup = proctree::cgroup(pid);
    let wanted = format!("/{}/{}", tour.options.namespace, tour.id);
    if cgroup.as_deref() == Some(wanted.as_str()) {
        tour.ui.ok(&format!(
            "the task is in the cgroup its spec names, {wanted}: the shim put it there \
             before it ran, so whatever it forks is there too"
        ));
    } else {
        tour.ui.notice(&format!(
            "the task is not in the cgroup {wanted} its spec names (it is in {}): the \
             shim could not write cgroups here, see its log",
            cgroup.as_deref().unwrap_or("none")
        ));
    }
    tour.ui.notice(
        "the shim's parent is not containerd: `start` exited and the daemon was re-parented. \
         The shim is the *subreaper* of its task, so when the shell's `sleep` loses its parent \
         it is re-parented to the shim, never lost to pid 1.",
    );
    tour.ui.notice(
        "the Go sample left the task in the shim's process group; here it has its own, so \
         `kill --all` reaches every process of the task and never the shim.",
    );
    Ok(json!({ "shim_pid": shim.pid, "shim_sid": shim.sid, "task_pid": task.pid, "task_pgid": task.pgid, "cgroup": cgroup })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
