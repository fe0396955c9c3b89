//! Walkthrough step: the same kind of task in the OCI mode, a real container, beside the
//! host-mode task of the tour.
//!
//! A runtime options file (`binary_name = "runc"`) on the container is all it takes: the
//! shim runs `runc create` and `runc start` instead of its own start gate, and the task is
//! pid 1 of a pid namespace of its own, with a root filesystem of its own (here a busybox
//! directory the step makes, named by the spec's `root.path`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{Observed, Tour};
use crate::{
    api::{oci_spec, runtime_options, Containerd},
    fifo::FifoSet,
    proctree, RUNTIME,
};

/// The busybox the root filesystem is made of (Debian's `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";

/// The `NSpid` line of `/proc/<pid>/status`: the pid in each namespace, the host's first.
fn ns_pids(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Makes a directory with the options file and a busybox root filesystem.
fn prepare(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .with_context(|| format!("copy {BUSYBOX} (apt-get install -y busybox-static)"))?;
    for applet in ["sh", "sleep", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let options = dir.join("sample-oci.toml");
    fs::write(&options, "binary_name = \"runc\"\n")?;
    Ok((rootfs, options))
}

/// Removes the container `id`, its task and FIFOs, whatever state they are in.
async fn remove(api: &Containerd, id: &str, fifos: &FifoSet) {
    let _ = api.kill(id, 9, false).await;
    let _ = api.wait(id).await;
    let _ = api.delete_task(id).await;
    let _ = api.delete_container(id).await;
    fifos.remove();
}

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    if !Path::new(BUSYBOX).exists() {
        bail!("the OCI mode's root filesystem is made of {BUSYBOX}: apt-get install -y busybox-static runc");
    }
    let dir = std::env::temp_dir().join(format!("shim-demo-oci-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let made = prepare(&dir);
    let result = async {
        let (rootfs, options) = made?;
        let api = tour.api()?;
        let id = format!("{}-oci", tour.id);
        let image = tour.options.image.clone();
        tour.ui.command(&format!(
            "echo 'binary_name = \"runc\"' > {0}\nctr run -d --runtime {RUNTIME} --runtime-config-path {0} {image} {id} sleep 1000",
            options.display()
        ));
        let cgroup = format!("/{}/{id}", tour.options.namespace);
        let spec = oci_spec(&rootfs, &["sleep", "1000"], &cgroup);
        let fifos = FifoSet::for_task(&api.address, &tour.options.namespace, &id);
        let runtime_options = runtime_options(&options.display().to_string());
        let observed = async {
            fifos.create()?;
            api.create_container_with_options(&id, &image, RUNTIME, &spec, Some(runtime_options))
                .await?;
            api.create_task(&id, &fifos).await?;
            let pid = api.start_task(&id).await? as i32;
            let task = proctree::read(pid).context("the container's init is gone")?;
            let shim = proctree::read(task.ppid).context("its parent is gone")?;
            tour.ui.command(&format!("ps -o ppid,pid,pgid,sid,args --forest -s {}", shim.sid));
            tour.ui.block(&proctree::render(&proctree::tree(shim.pid), 90));
            let (oci_pids, host_pids) = (ns_pids(pid), ns_pids(tour.pid as i32));
            // What each process sees at `/`, through `/proc/<pid>/root`.
            let root_of = |pid: u32| -> Vec<String> {
                let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/root"))
                    .map(|dir| {
                        dir.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names
            };
            let (root, host_root) = (root_of(pid as u32), root_of(tour.pid));
            tour.ui.command(&format!(
                "grep NSpid /proc/{0}/status /proc/{pid}/status; ls /proc/{0}/root /proc/{pid}/root",
                tour.pid
            ));
            tour.ui.block(&format!(
                "host mode: NSpid {host_pids:?}, / holds {}\nOCI mode:  NSpid {oci_pids:?}, / holds {}",
                host_root.join(" "),
                root.join(" ")
            ));
            let own_root = root.contains(&"bin".to_string()) && !root.contains(&"usr".to_string());
            tour.check(
                shim.command.contains("containerd-shim-sample-v2"),
                "the container's init is the shim's child, as the host task is: runc made it and exited, and the shim (its subreaper) took it",
            )?;
            tour.check(
                oci_pids.last() == Some(&1) && oci_pids.len() == 2,
                "it is pid 1 of a pid namespace of its own, and has a host pid too",
            )?;
            tour.check(
                host_pids.len() == 1,
                "the host-mode task has the host's pid namespace only",
            )?;
            tour.check(
                own_root && root != host_root,
                "its `/` is the busybox root filesystem (no /usr), not the host's",
            )?;
            anyhow::Ok(json!({ "oci_pid": pid, "ns_pids": oci_pids, "root": root, "own_root": own_root }))
        }
        .await;
        remove(api, &id, &fifos).await;
        let observed = observed?;
        tour.ui.notice(
            "the shim's duties did not change: the same reaper, exit codes, events and FIFOs. \
             What changed is who makes the process: `runc create` (namespaces, root, cgroup, \
             capabilities, seccomp) instead of the shim's own start gate. See the README's \
             \"The OCI mode\".",
        );
        anyhow::Ok(observed)
    }
    .await;
    let _ = fs::remove_dir_all(&dir);
    Ok(result?.as_object().cloned().unwrap_or_default())
}
