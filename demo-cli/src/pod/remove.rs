//! Pod tour step: `RemoveContainer`, `StopPodSandbox`, `RemovePodSandbox`: the shim stays
//! while the sandbox is there, and exits with it.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{short, PodTour};
use crate::{
    proctree,
    steps::{observed, Observed},
};

/// True once `pid` is gone (or a zombie, which its reaper collects).
fn gone(pid: i32) -> bool {
    proctree::read(pid).is_none_or(|row| row.command.starts_with('['))
}

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let containers = std::mem::take(&mut tour.containers);
    for (name, id) in &containers {
        tour.ui.command(&format!("crictl rm {}", short(id)));
        tour.cri()?
            .remove_container(id)
            .await
            .map_err(|s| anyhow!("RemoveContainer {name}: {}", s.message()))?;
    }
    tour.check(
        !gone(tour.shim),
        "with its containers removed, the shim still serves the sandbox",
    )?;
    let pod_id = tour.pod_id.clone();
    tour.ui.command(&format!(
        "crictl stopp {0} && crictl rmp {0}",
        short(&pod_id)
    ));
    tour.cri()?
        .stop_pod(&pod_id)
        .await
        .map_err(|s| anyhow!("StopPodSandbox: {}", s.message()))?;
    tour.cri()?
        .remove_pod(&pod_id)
        .await
        .map_err(|s| anyhow!("RemovePodSandbox: {}", s.message()))?;
    tour.pod_id.clear();
    for _ in 0..250 {
        if gone(tour.shim) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (shim_gone, pause_gone) = (gone(tour.shim), gone(tour.pause));
    tour.check(pause_gone, "StopPodSandbox ended the pause process")?;
    tour.check(
        shim_gone,
        "the shim exited once its last container, the sandbox, was deleted",
    )?;
    Ok(observed(json!({
        "removed": containers.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "shim_exited": shim_gone,
        "pause_exited": pause_gone,
    })))
}
