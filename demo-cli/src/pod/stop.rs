//! Pod tour step: `StopContainer` with a grace period: SIGTERM, then SIGKILL when the
//! period ends.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{short, PodTour};
use crate::{
    signals,
    steps::{observed, Observed},
};

/// The grace period given to the container that ignores SIGTERM.
const GRACE_SECS: i64 = 2;

/// `StopContainer` of the container `name` with `grace_secs`: its exit code, and the seconds
/// until it exited.
async fn stop(tour: &mut PodTour, name: &str, grace_secs: i64) -> Result<(i32, f64)> {
    let id = tour.container(name)?;
    tour.ui.command(&format!(
        "crictl stop --timeout {grace_secs} {}",
        short(&id)
    ));
    let started = Instant::now();
    tour.cri()?
        .stop_container(&id, grace_secs)
        .await
        .map_err(|s| anyhow!("StopContainer {name}: {}", s.message()))?;
    let code = tour.wait_exited(&id, Duration::from_secs(10)).await?;
    Ok((code, started.elapsed().as_secs_f64()))
}

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let (clock_code, clock_secs) = stop(tour, "clock", 30).await?;
    tour.ui.say(&format!(
        "clock exited with {clock_code} ({}) after {clock_secs:.2} s: it did not need its 30 s.",
        signals::explain_exit(clock_code as u32)
    ));
    tour.check(
        clock_code == 143,
        "SIGTERM ends a process that does not catch it: 143",
    )?;

    let (stubborn_code, stubborn_secs) = stop(tour, "stubborn", GRACE_SECS).await?;
    tour.ui.say(&format!(
        "stubborn exited with {stubborn_code} ({}) after {stubborn_secs:.2} s.",
        signals::explain_exit(stubborn_code as u32)
    ));
    tour.check(
        stubborn_code == 137 && stubborn_secs >= GRACE_SECS as f64,
        &format!("a process that ignores SIGTERM is SIGKILLed when the {GRACE_SECS} s grace period ends: 137"),
    )?;
    tour.ui.notice(
        "the grace period is the CRI plugin's: it sends Kill(SIGTERM) to the shim, waits, then \
         Kill(SIGKILL). The shim reports each exit as 128 + the signal, after killing whatever \
         the container's process left behind; the CRI plugin then deletes the task at once \
         (Delete, Shutdown), and the shim stays for the sandbox.",
    );
    Ok(observed(json!({
        "clock_exit": clock_code,
        "clock_secs": clock_secs,
        "stubborn_exit": stubborn_code,
        "stubborn_secs": stubborn_secs,
    })))
}
