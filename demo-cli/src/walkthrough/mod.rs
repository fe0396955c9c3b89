//! The guided tour: the Go sample's README, step by step, against a real containerd.
//!
//! Each step is a small function in a file of its own that does one thing through
//! containerd's API, shows the `ctr` command a reader would type for it, checks what it
//! expects (a failed expectation fails the tour), and says what to notice. The tour cleans
//! up everything it created, also when a step fails or the reader presses Ctrl-C.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::{api::Containerd, fifo::FifoSet, ui::Ui, DEFAULT_ID};

mod attached;
mod cleanup;
mod create;
mod delete;
mod image;
mod kill;
mod output;
pub mod preflight;
mod refuse;
mod start;
mod tree;

/// What the tour was asked to do.
pub struct Options {
    /// containerd's socket.
    pub address: PathBuf,
    /// containerd namespace.
    pub namespace: String,
    /// The image to name on the container.
    pub image: String,
    /// No pauses.
    pub yes: bool,
    /// JSON output.
    pub json: bool,
}

/// Values a step observed, reported with `--json`.
pub type Observed = Map<String, Value>;

/// A `/tasks/*` event of our container: topic and decoded payload.
pub type SeenEvent = (String, Value);

/// The state the steps share.
pub struct Tour {
    /// Output.
    pub ui: Ui,
    /// The options.
    pub options: Options,
    /// The connection, once preflight made it.
    api: Option<Containerd>,
    /// The container id (`shim-test`).
    pub id: String,
    /// The task's FIFOs, once created.
    pub fifos: FifoSet,
    /// The task's init pid (round one).
    pub pid: u32,
    /// The shim's pid.
    pub shim: i32,
    /// Events of our container seen so far.
    pub events: Arc<Mutex<Vec<SeenEvent>>>,
    /// The task collecting them.
    events_task: Option<JoinHandle<()>>,
}

impl Tour {
    /// The containerd connection; steps after preflight can rely on it.
    pub fn api(&self) -> Result<&Containerd> {
        match &self.api {
            Some(api) => Ok(api),
            None => bail!("not connected to containerd"),
        }
    }

    /// Checks an expectation: prints it as held, or fails the step with it.
    pub fn check(&self, holds: bool, expectation: &str) -> Result<()> {
        if holds {
            self.ui.ok(expectation);
            Ok(())
        } else {
            bail!("expected: {expectation}")
        }
    }

    /// Polls the task's status until `want` (or `limit` passes).
    pub async fn wait_status(&self, want: &str, limit: Duration) -> Result<String> {
        let api = self.api()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = match api.task(&self.id).await? {
                Some(task) => crate::api::status_name(task.status).to_string(),
                None => "NONE".to_string(),
            };
            if status == want || tokio::time::Instant::now() > deadline {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Topics of the events seen so far.
    pub fn seen_topics(&self) -> Vec<String> {
        self.events
            .lock()
            .map(|events| events.iter().map(|(topic, _)| topic.clone()).collect())
            .unwrap_or_default()
    }
}

/// The steps, in order.
#[derive(Clone, Copy)]
enum Step {
    Preflight,
    Image,
    Create,
    Start,
    Tree,
    Output,
    Refuse,
    Kill,
    Delete,
    Attached,
}

const STEPS: [Step; 10] = [
    Step::Preflight,
    Step::Image,
    Step::Create,
    Step::Start,
    Step::Tree,
    Step::Output,
    Step::Refuse,
    Step::Kill,
    Step::Delete,
    Step::Attached,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Image => "image",
            Step::Create => "create_container",
            Step::Start => "start_task",
            Step::Tree => "process_tree",
            Step::Output => "task_output",
            Step::Refuse => "delete_refused",
            Step::Kill => "kill",
            Step::Delete => "delete_task",
            Step::Attached => "attached_sigint",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Step::Preflight => "Is containerd there, and can it find our shim?",
            Step::Image => "An image in the store",
            Step::Create => "Create the container (containerd alone)",
            Step::Start => "Start the task: here the shim's work begins",
            Step::Tree => "The process tree",
            Step::Output => "The task's output, through FIFOs",
            Step::Refuse => "A running task cannot be deleted",
            Step::Kill => "Kill the task with SIGTERM",
            Step::Delete => "Delete the task: exit code 143",
            Step::Attached => "Round two: attached, and Ctrl-C",
        }
    }

    async fn run(self, tour: &mut Tour) -> Result<Observed> {
        match self {
            Step::Preflight => preflight::run(tour).await,
            Step::Image => image::run(tour).await,
            Step::Create => create::run(tour).await,
            Step::Start => start::run(tour).await,
            Step::Tree => tree::run(tour).await,
            Step::Output => output::run(tour).await,
            Step::Refuse => refuse::run(tour).await,
            Step::Kill => kill::run(tour).await,
            Step::Delete => delete::run(tour).await,
            Step::Attached => attached::run(tour).await,
        }
    }
}

/// Runs the tour; returns the process exit code: 0, 1 (an expectation failed), 2 (the
/// preflight failed) or 130 (interrupted).
pub async fn run(options: Options) -> i32 {
    let ui = Ui::new(options.json, options.yes);
    let fifos = FifoSet::for_task(&options.address, &options.namespace, DEFAULT_ID);
    let mut tour = Tour {
        ui,
        options,
        api: None,
        id: DEFAULT_ID.to_string(),
        fifos,
        pid: 0,
        shim: 0,
        events: Arc::default(),
        events_task: None,
    };
    let code = tokio::select! {
        code = run_steps(&mut tour) => code,
        _ = tokio::signal::ctrl_c() => {
            ui.fail("interrupted: cleaning up");
            130
        }
    };
    let cleaned = cleanup::run(&mut tour, STEPS.len() + 1).await;
    if let Some(events) = tour.events_task.take() {
        events.abort();
    }
    match (code, cleaned) {
        (0, Err(_)) => 1,
        (code, _) => code,
    }
}

async fn run_steps(tour: &mut Tour) -> i32 {
    let total = STEPS.len() + 1;
    for (index, step) in STEPS.into_iter().enumerate() {
        tour.ui.heading(index + 1, total, step.title());
        match step.run(tour).await {
            Ok(observed) => {
                tour.ui
                    .json_line(&json!({ "step": step.name(), "ok": true, "observed": observed }));
                tour.ui.pause().await;
            }
            Err(err) => {
                tour.ui.fail(&format!("{err:#}"));
                tour.ui.json_line(
                    &json!({ "step": step.name(), "ok": false, "error": format!("{err:#}") }),
                );
                return if matches!(step, Step::Preflight) {
                    2
                } else {
                    1
                };
            }
        }
    }
    0
}

/// Starts collecting our container's `/tasks/*` events (called once connected, long before
/// the task exists). In the background: containerd answers `Subscribe` only with the first
/// event.
fn collect_events(tour: &mut Tour) {
    let (Some(address), namespace) = (
        tour.api.as_ref().map(|a| a.address.clone()),
        tour.options.namespace.clone(),
    ) else {
        return;
    };
    let events = tour.events.clone();
    let id = tour.id.clone();
    tour.events_task = Some(tokio::spawn(async move {
        let Ok(api) = Containerd::connect(&address, &namespace).await else {
            return;
        };
        let Ok(mut stream) = api.subscribe(&[]).await else {
            return;
        };
        while let Ok(Some(envelope)) = stream.message().await {
            if !envelope.topic.starts_with("/tasks/") {
                continue;
            }
            let payload = envelope
                .event
                .as_ref()
                .map(|any| crate::commands::events::decode_task_event(&envelope.topic, &any.value))
                .unwrap_or_default();
            if payload["container_id"] == id {
                if let Ok(mut seen) = events.lock() {
                    seen.push((envelope.topic, payload));
                }
            }
        }
    }));
}
