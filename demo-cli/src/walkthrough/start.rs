//! Walkthrough step: start the task, detached. containerd runs the shim; the shim runs the process.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{Observed, Tour};
use crate::commands::{self, start::explain_create_error};

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    let id = tour.id.clone();
    tour.ui.command(&format!("ctr task start --detach {id}"));
    tour.fifos.create()?;
    let api = tour.api()?;
    let created = api
        .create_task(&id, &tour.fifos)
        .await
        .map_err(|status| anyhow!("create task: {}", explain_create_error(&status)))?;
    tour.ui.say(&format!(
        "containerd ran `containerd-shim-sample-v2 start`, which launched the shim daemon and \
         printed its socket address; then it called Create over ttrpc. The shim made process \
         {created} in the CREATED state: it exists, but waits at a start gate."
    ));
    let pid = api
        .start_task(&id)
        .await
        .map_err(|s| anyhow!("start task: {s}"))?;
    tour.pid = pid;
    tour.ui
        .say("Start opened the gate: the process ran its command.");
    let status = tour.wait_status("RUNNING", Duration::from_secs(5)).await?;
    tour.ui.command("ctr task ls");
    tour.ui.block(&commands::ps::table(tour.api()?).await?);
    tour.check(status == "RUNNING", "the task is RUNNING")?;
    tour.check(pid == created, "Start returned the pid Create reported")?;
    Ok(json!({ "pid": pid, "status": status })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
