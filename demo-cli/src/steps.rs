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

/// Runs `steps` in order on `tour`, numbered out of `total` (a tour's cleanup comes after
/// them). Returns 0, 2 when the first step (the preflight) fails, 1 when another does.
pub async fn run<T>(tour: &mut T, ui: Ui, steps: &[Step<T>], total: usize) -> i32 {
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

/// `value`'s fields, for a step's [`Observed`] (empty unless `value` is an object).
pub fn observed(value: Value) -> Observed {
    match value {
        Value::Object(map) => map,
        _ => Observed::new(),
    }
}
