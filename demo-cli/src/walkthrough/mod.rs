//! The guided tour: the Go sample's README, step by step, against a real containerd.
//!
//! Each step is a small function in a file of its own that does one thing through
//! containerd's API, shows the `ctr` command a reader would type for it, checks what it
//! expects (a failed expectation fails the tour), and says what to notice. The tour cleans
//! up everything it created, also when a step fails or the reader presses Ctrl-C.
//!
//! The steps are listed once, in `STEPS` below: a new step is a new file (and its `mod`
//! line) and one entry there.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Result};
use serde_json::Value;
use tokio::task::JoinHandle;

pub use crate::steps::Observed;
use crate::{
    api::Containerd,
    fifo::FifoSet,
    steps::{self, Step},
    ui::Ui,
    DEFAULT_ID,
};

mod attached;
mod cleanup;
mod create;
mod delete;
mod image;
mod kill;
mod oci;
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
        self.ui.check(holds, expectation)
    }

    /// Polls the task's status until `want` (or `limit` passes).
    pub async fn wait_status(&self, want: &str, limit: Duration) -> Result<String> {
        let api = self.api()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = match api.task(&self.id).await? {
                Some(task) => task.status().as_str_name().to_string(),
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

/// The steps, in order. Adding a step is a file of its own (and its `mod` line) and one
/// entry here: numbering, headings and `--json` names all come from this list.
const STEPS: &[Step<Tour>] = &[
    Step {
        name: "preflight",
        title: "Is containerd there, and can it find our shim?",
        run: |tour| Box::pin(preflight::run(tour)),
    },
    Step {
        name: "image",
        title: "An image in the store",
        run: |tour| Box::pin(image::run(tour)),
    },
    Step {
        name: "create_container",
        title: "Create the container (containerd alone)",
        run: |tour| Box::pin(create::run(tour)),
    },
    Step {
        name: "start_task",
        title: "Start the task: here the shim's work begins",
        run: |tour| Box::pin(start::run(tour)),
    },
    Step {
        name: "process_tree",
        title: "The process tree",
        run: |tour| Box::pin(tree::run(tour)),
    },
    Step {
        name: "oci_mode",
        title: "The same in the OCI mode: a real container, through runc",
        run: |tour| Box::pin(oci::run(tour)),
    },
    Step {
        name: "task_output",
        title: "The task's output, through FIFOs",
        run: |tour| Box::pin(output::run(tour)),
    },
    Step {
        name: "delete_refused",
        title: "A running task cannot be deleted",
        run: |tour| Box::pin(refuse::run(tour)),
    },
    Step {
        name: "kill",
        title: "Kill the task with SIGTERM",
        run: |tour| Box::pin(kill::run(tour)),
    },
    Step {
        name: "delete_task",
        title: "Delete the task: exit code 143",
        run: |tour| Box::pin(delete::run(tour)),
    },
    Step {
        name: "attached_sigint",
        title: "Round two: attached, and Ctrl-C",
        run: |tour| Box::pin(attached::run(tour)),
    },
];

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
    // The cleanup is the last step, run whatever happened.
    let code = steps::run(&mut tour, ui, STEPS, |tour, number| {
        Box::pin(cleanup::run(tour, number))
    })
    .await;
    if let Some(events) = tour.events_task.take() {
        events.abort();
    }
    code
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
