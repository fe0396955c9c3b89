//! The last step, always run: remove what the tour created, and watch the shim go.

use std::time::Duration;

use anyhow::Result;

use super::Tour;
use crate::{commands, proctree};

/// Removes the task, container, FIFOs and imported image; checks that the shim exited.
pub async fn run(tour: &mut Tour, number: usize) -> Result<()> {
    tour.ui.heading(number, number, "Clean up");
    let result = async {
        let Ok(api) = tour.api() else {
            tour.ui.say("Nothing was created.");
            return Ok(Vec::new());
        };
        let done = commands::cleanup::run(api, &tour.id, &tour.options.image).await?;
        for line in &done {
            tour.ui.ok(line);
        }
        if tour.shim > 0 {
            for _ in 0..250 {
                if proctree::read(tour.shim).is_none_or(|row| row.command.starts_with('[')) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let gone = proctree::read(tour.shim).is_none_or(|row| row.command.starts_with('['));
            tour.check(
                gone,
                "the shim exited once it had no task left, and removed its socket",
            )?;
        }
        anyhow::Ok(done)
    }
    .await;
    crate::steps::report_cleanup(tour.ui, &result);
    result.map(|_| ())
}
