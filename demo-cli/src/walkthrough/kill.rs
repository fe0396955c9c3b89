//! Walkthrough step: SIGTERM. The task stops; the shim stays, with no children, to report it.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::{Observed, Tour};
use crate::{commands, proctree};

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    tour.ui.command(&format!(
        "ctr task kill {}        # SIGTERM (15) by default",
        tour.id
    ));
    tour.api()?
        .kill(&tour.id, libc::SIGTERM as u32, false)
        .await?;
    let spinner = tour.ui.spinner("waiting for STOPPED");
    let status = tour.wait_status("STOPPED", Duration::from_secs(10)).await?;
    drop(spinner);
    tour.ui.command("ctr task ls");
    tour.ui.block(&commands::ps::table(tour.api()?).await?);
    tour.check(status == "STOPPED", "the task is STOPPED")?;
    let tree = proctree::tree(tour.shim);
    tour.ui.block(&proctree::render(&tree, 90));
    let alive = proctree::read(tour.shim).is_some();
    let children = tree.len().saturating_sub(1);
    tour.check(
        alive,
        "the shim is still alive, so the status and exit code can be read",
    )?;
    tour.check(
        children == 0,
        "the shim has no children: the leftover `sleep` was killed and reaped",
    )?;
    Ok(
        json!({ "signal": 15, "status": status, "shim_alive": alive, "shim_children": children })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}
