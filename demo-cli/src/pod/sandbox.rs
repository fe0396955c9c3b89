//! Pod tour step: `RunPodSandbox`. The pod exists as a task of its own: the pause process.

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use super::{short, PodTour};
use crate::{
    cri::proto::PodSandboxState,
    proctree,
    steps::{observed, Observed},
};

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let handler = tour.options.handler.clone();
    tour.ui.command(&format!(
        "crictl runp --runtime {handler} pod.json   # host network, as every pod here"
    ));
    let pod = tour.pod.clone();
    let cri = tour.cri()?;
    let pod_id = cri
        .run_pod(&pod, &handler)
        .await
        .map_err(|s| anyhow!("RunPodSandbox: {}", s.message()))?;
    let status = cri.pod_status(&pod_id).await?;
    let pause = cri.pod_pid(&pod_id).await?;
    tour.pod_id = pod_id.clone();
    let ready = status.state == PodSandboxState::SandboxReady as i32;
    tour.ui.say(&format!(
        "The CRI plugin created a container for the pod's *sandbox* ({}) and started its task \
         with our runtime: containerd ran `containerd-shim-sample-v2 start` in the sandbox's \
         bundle, and the shim created the sandbox's process.",
        short(&pod_id)
    ));
    tour.check(ready, "the pod is READY")?;
    let row = proctree::read(pause).context("the sandbox's process is gone")?;
    let shim = proctree::read(row.ppid).context("the sandbox's parent is gone")?;
    tour.pause = pause;
    tour.shim = shim.pid;
    tour.ui.command(&format!(
        "ps -o ppid,pid,pgid,sid,args --forest -s {}",
        shim.sid
    ));
    tour.ui
        .block(&proctree::render(&proctree::tree(shim.pid), 100));
    // The pause process names itself once the start-gate helper has run it: a moment.
    let mut comm = String::new();
    for _ in 0..250 {
        comm = std::fs::read_to_string(format!("/proc/{pause}/comm")).unwrap_or_default();
        if comm.trim() == "pause" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let expectation = if tour.oci {
        "the sandbox runs `pause`: the pause image's /pause, in a container of its own"
    } else {
        "the sandbox runs `pause`: the shim's own idle process, not the image's /pause"
    };
    tour.check(comm.trim() == "pause", expectation)?;
    tour.check(
        shim.command.contains("containerd-shim-sample-v2"),
        "its parent is our shim",
    )?;
    tour.ui.notice(if tour.oci {
        "in the OCI mode the sandbox is what it is under runc: a container of the pause \
         image, whose process holds the pod's namespaces open so that the containers can join \
         them. runc made it (`runc create`, `runc start`) and exited; the process is the \
         shim's child, as a host process would be."
    } else {
        "under runc the pause process holds the pod's namespaces open, so containers can join \
         them. This shim runs host processes and has no namespaces to hold, but the CRI plugin \
         still wants the sandbox to be a running task for as long as the pod lives. So the \
         shim runs an idle process of its own that waits for a signal, whatever the sandbox's \
         spec says."
    });
    Ok(observed(json!({
        "pod_id": pod_id,
        "state": if ready { "READY" } else { "NOTREADY" },
        "pause_pid": pause,
        "pause_comm": comm.trim(),
        "shim_pid": shim.pid,
    })))
}
