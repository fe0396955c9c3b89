//! What the two tours (`walkthrough`, `pod`) share: a list of steps, each a function, and
//! the loop that runs them, numbers them, prints them or their JSON, and stops at the
//! first that fails.

use std::{future::Future, pin::Pin};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::ui::{self, Ui};

/// Values a step observed, reported with `--json`.
pub type Observed = Map<String, Value>;

/// What a step's function returns: a future borrowing the tour's state `T`.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Observed>> + 'a>>;

/// One step of a tour whose state is `T`.
pub struct Step<T> {
    /// The step's key in `--json` output (the integration tests read it).
    pub name: &'static str,
    /// The heading the reader sees.
    pub title: &'static str,
    /// Does the step's work (a function in the step's file).
    pub run: for<'a> fn(&'a mut T) -> StepFuture<'a>,
}

/// A tour's cleanup, given the tour and its step number (the last).
pub type Cleanup<T> =
    for<'a> fn(&'a mut T, usize) -> Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// Runs a tour: `steps` in order on `tour`, then `cleanup`, whatever happened (a failed step,
/// Ctrl-C). Returns the process exit code: 0, 1 (an expectation failed, or the cleanup), 2
/// (the first step, the preflight, failed) or 130 (interrupted).
pub async fn run<T>(tour: &mut T, ui: Ui, steps: &[Step<T>], cleanup: Cleanup<T>) -> i32 {
    let total = steps.len() + 1;
    let code = tokio::select! {
        code = run_steps(tour, ui, steps, total) => code,
        _ = tokio::signal::ctrl_c() => {
            ui.fail("interrupted: cleaning up");
            130
        }
    };
    match (code, cleanup(tour, total).await) {
        (0, Err(_)) => 1,
        (code, _) => code,
    }
}

/// Runs `steps` in order on `tour`, numbered out of `total`. Returns 0, 2 when the first
/// step (the preflight) fails, 1 when another does.
async fn run_steps<T>(tour: &mut T, ui: Ui, steps: &[Step<T>], total: usize) -> i32 {
    for (index, step) in steps.iter().enumerate() {
        ui.heading(index + 1, total, step.title);
        match (step.run)(tour).await {
            Ok(observed) => {
                ui.json_line(&json!({ "step": step.name, "ok": true, "observed": observed }));
                ui.pause().await;
            }
            Err(err) => {
                let error = ui::error_text(&err);
                ui.fail(&error);
                ui.json_line(&json!({ "step": step.name, "ok": false, "error": error }));
                return if index == 0 { 2 } else { 1 };
            }
        }
    }
    0
}

/// Reports a tour's cleanup, the step that always runs last: what it `removed`, or why it
/// failed (on stderr, and as the step's JSON).
pub fn report_cleanup(ui: Ui, result: &Result<Vec<String>>) {
    match result {
        Ok(removed) => ui.json_line(
            &json!({ "step": "cleanup", "ok": true, "observed": { "removed": removed } }),
        ),
        Err(err) => {
            let error = ui::error_text(err);
            ui.fail(&error);
            ui.json_line(&json!({ "step": "cleanup", "ok": false, "error": error }));
        }
    }
}

/// `value`'s fields, for a step's [`Observed`] (empty unless `value` is an object).
pub fn observed(value: Value) -> Observed {
    match value {
        Value::Object(map) => map,
        _ => Observed::new(),
    }
}
