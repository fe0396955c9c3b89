//! Walkthrough step: round two, attached. Ctrl-C in an attached `ctr` becomes SIGINT for the task:
//! exit code 130 = 128 + 2.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Observed, Tour};
use crate::{fifo, signals::explain_exit};

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    let id = tour.id.clone();
    tour.ui.command(&format!(
        "ctr task start {id}        # attached; then Ctrl-C"
    ));
    tour.fifos.create()?;
    let api = tour.api()?;
    let reader = fifo::open_reader(&tour.fifos.stdout())?;
    api.create_task(&id, &tour.fifos)
        .await
        .map_err(|s| anyhow!("create task: {s}"))?;
    let wait = api.wait(&id);
    tokio::pin!(wait);
    api.start_task(&id)
        .await
        .map_err(|s| anyhow!("start task: {s}"))?;
    let mut lines = BufReader::new(reader).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("no output within 10 s")??
        .context("stdout closed")?;
    tour.ui.block(&line);
    tour.ui.say(
        "Ctrl-C sends SIGINT to `ctr` itself; ctr forwards it to the task with a Kill \
         request, which containerd hands to the shim. The demo sends that same request:",
    );
    api.kill(&id, libc::SIGINT as u32, false).await?;
    let code = tokio::time::timeout(Duration::from_secs(10), &mut wait)
        .await
        .context("the task did not exit after SIGINT")??;
    tour.ui.block(&format!("exit code {}", explain_exit(code)));
    tour.check(
        code == 130,
        "130: the process died of SIGINT, reported as 128 + 2",
    )?;
    api.delete_task(&id).await?;
    tour.fifos.remove();
    Ok(json!({ "exit_code": code })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
