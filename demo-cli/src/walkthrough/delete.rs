//! Walkthrough step: delete the task; its exit code is 143 = 128 + SIGTERM. And the events.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::{Observed, Tour};
use crate::signals::explain_exit;

const EXPECTED: [&str; 4] = [
    "/tasks/create",
    "/tasks/start",
    "/tasks/exit",
    "/tasks/delete",
];

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    tour.ui.command(&format!("ctr task rm {}", tour.id));
    let code = tour.api()?.delete_task(&tour.id).await?;
    tour.ui.block(&format!("exit code {}", explain_exit(code)));
    tour.check(
        code == 143,
        "143: the process died of SIGTERM, reported as 128 + 15",
    )?;

    // The delete event may still be on its way from the shim through containerd.
    for _ in 0..100 {
        if tour.seen_topics().len() >= EXPECTED.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = tour.events.lock().map(|e| e.clone()).unwrap_or_default();
    tour.ui
        .say("The events the shim published on the way (`ctr events` shows them too):");
    tour.ui.block(
        &events
            .iter()
            .map(|(topic, payload)| format!("{topic:<14} {payload}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    tour.check(
        topics == EXPECTED,
        "create, start, exit, delete, in that order",
    )?;
    let exit_status = events
        .iter()
        .find(|(t, _)| t == "/tasks/exit")
        .and_then(|(_, p)| p["exit_status"].as_u64());
    tour.check(exit_status == Some(143), "/tasks/exit carries 143")?;
    tour.ui
        .say("To start a new task from the same container, replay the steps: round two.");
    Ok(json!({ "exit_code": code, "events": topics })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
