//! Walkthrough step: the task's output, read from the FIFO the demo created.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Observed, Tour};
use crate::fifo;

/// Lines to show.
const LINES: usize = 2;

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    tour.ui.say(&format!(
        "The shim copies the task's stdout into {}, a FIFO the demo (the client) created. \
         The loop prints the date every 5 seconds:",
        tour.fifos.stdout().display()
    ));
    let reader = fifo::open_reader(&tour.fifos.stdout())?;
    let mut lines = BufReader::new(reader).lines();
    let mut seen = Vec::new();
    let spinner = tour.ui.spinner("waiting for output");
    while seen.len() < LINES {
        let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .context("no output from the task within 15 s")??
            .context("the stdout FIFO closed")?;
        seen.push(line);
    }
    drop(spinner);
    tour.ui.block(&seen.join("\n"));
    let dates = seen
        .iter()
        .all(|l| l.len() == 25 && l.as_bytes()[10] == b' ');
    tour.check(
        dates,
        "each line is an RFC 3339 date (date --rfc-3339=seconds)",
    )?;
    tour.ui.notice(
        "nobody has to read for the task to live: the shim holds the FIFO open read-write, so \
         a detached task never dies of SIGPIPE, and a later `ctr task attach` reads on.",
    );
    Ok(json!({ "lines": seen })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
