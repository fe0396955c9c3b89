//! Pod tour step: two containers, created and started as a kubelet does; both land in the
//! pod's shim.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{short, PodTour};
use crate::{
    cri::{container, proto::ContainerState},
    proctree,
    steps::{observed, Observed},
};

/// The Go sample's command, as the first container's.
pub const CLOCK: [&str; 3] = [
    "sh",
    "-c",
    "while date --rfc-3339=seconds; do sleep 5; done",
];

/// The same loop in a busybox image (the OCI mode): busybox's `date` has no
/// `--rfc-3339`; `-Iseconds` is the same instant in ISO 8601.
pub const CLOCK_OCI: [&str; 3] = ["sh", "-c", "while date -Iseconds; do sleep 5; done"];

/// A process that ignores SIGTERM, as some real ones do.
pub const STUBBORN: [&str; 3] = [
    "sh",
    "-c",
    "trap '' TERM; echo 'SIGTERM? not listening'; while :; do sleep 1; done",
];

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let image = tour.options.image.clone();
    let (pod_id, pod) = (tour.pod_id.clone(), tour.pod.clone());
    let mut pids = Vec::new();
    let clock = if tour.oci { CLOCK_OCI } else { CLOCK };
    for (name, command) in [("clock", clock), ("stubborn", STUBBORN)] {
        tour.ui.command(&format!(
            "crictl create {} {name}.json pod.json && crictl start <id>",
            short(&pod_id)
        ));
        let cri = tour.cri()?;
        let config = container(name, &image, &command, &[]);
        let id = cri
            .create_container(&pod_id, &pod, config)
            .await
            .map_err(|s| anyhow!("CreateContainer {name}: {}", s.message()))?;
        cri.start_container(&id)
            .await
            .map_err(|s| anyhow!("StartContainer {name}: {}", s.message()))?;
        tour.containers.push((name.to_string(), id.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = tour.cri()?.container_status(&id).await?;
            if status.state == ContainerState::ContainerRunning as i32
                || tokio::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pids.push(tour.cri()?.container_pid(&id).await?);
    }
    tour.ui.say(
        "For each container containerd ran `containerd-shim-sample-v2 start` again, in the \
         container's own bundle. The spec carries the pod's id (`io.kubernetes.cri.sandbox-id`), \
         so `start` found the pod's shim already serving that group's socket and printed its \
         address instead of launching another shim.",
    );
    tour.ui.command(&format!(
        "ps -o ppid,pid,pgid,sid,args --forest -s {}",
        tour.shim
    ));
    tour.ui
        .block(&proctree::render(&proctree::tree(tour.shim), 100));
    let parents: Vec<i32> = pids
        .iter()
        .map(|&pid| proctree::read(pid).map_or(0, |row| row.ppid))
        .collect();
    tour.check(
        parents.iter().all(|&ppid| ppid == tour.shim),
        "both containers are children of the pod's one shim",
    )?;
    let clock = proctree::read(pids[0])
        .map(|row| row.command)
        .unwrap_or_default();
    tour.check(
        clock.contains("date --rfc-3339") || clock.contains("date -Iseconds"),
        "a CRI container runs its spec's command (here, the Go sample's date loop)",
    )?;
    tour.ui.notice(
        "one shim per pod, as containerd's runc shim does it: the shim keeps a table of \
         containers, each with its own processes, exec ids, stdio and events, and exits only \
         when the last one is deleted.",
    );
    Ok(observed(json!({
        "container_pids": pids,
        "parents": parents,
        "shim_pid": tour.shim,
    })))
}
