//! Events the shim publishes to containerd: `/tasks/create`, `/tasks/start`, `/tasks/exit`,
//! `/tasks/delete`, and for exec processes and pausing `/tasks/exec-added`,
//! `/tasks/exec-started`, `/tasks/paused`, `/tasks/resumed`.
//!
//! A shim does not answer event subscriptions itself. It forwards each event over ttrpc to
//! the address containerd gave in `TTRPC_ADDRESS` (the `Events.Forward` RPC), and containerd
//! fans them out to its subscribers (`ctr events`). The [`Publisher`] sends them from one
//! queue, one at a time, in order. An event that fails (containerd restarting) is tried
//! again after a pause of 1 s, then 2 s, and so on, on a new connection, and dropped after
//! six tries (15 s of pauses, plus up to 5 s per try for a containerd that does not answer);
//! the events behind it wait, so the order holds. A client that
//! reconnects after a restart asks `State`, which is always right, rather than trusting it
//! saw every event.
//!
//! The queue is ours, not the `containerd-shim` crate's (`RemotePublisher`), for the end of
//! the shim: the daemon exits only once every event is answered ([`Publisher::flushed`]).
//! With the crate's queue it could exit while containerd was still writing its answer to
//! the last `/tasks/delete`, and containerd logged `failed sending message on channel ...
//! broken pipe` (about one delete in a hundred).
//!
//! Order matters to clients: `ctr run` waits for `/tasks/exit` after `/tasks/start`. The
//! task service publishes each container's events under that container's lock, so the
//! queue sees them in the order they happened (see `task/container.rs`).
//!
//! The service does not know about ttrpc here: it hands a [`TaskEvent`] to an [`EventSink`].
//! The shim's sink is the [`Publisher`] below; the core's tests (`shim/tests/core.rs`) use
//! one that records, and run the task logic without containerd.
//!
//! Each event travels as a protobuf `Any`: its type name (`containerd.events.TaskExit`)
//! and its encoded bytes. The name comes from the generated type's `Message::NAME`, not
//! from protobuf reflection: building the reflection tables (what the crate's `publish`
//! does through `descriptor_dyn()`) costs a shim hundreds of KiB of heap it never frees.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use containerd_shim_protos::{
    events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM,
        TaskPaused, TaskResumed, TaskStart,
    },
    protobuf::{
        well_known_types::{any::Any, timestamp::Timestamp},
        Message, MessageField,
    },
    shim::{event::Envelope, events::ForwardRequest},
    shim_async::{Client, EventsClient},
    topics, ttrpc,
};
use log::warn;
use tokio::sync::{mpsc, watch};

use crate::{stdio::StdioPaths, task::process::ExitStatus};

/// An event of a task's life, in the order the service publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// `/tasks/create`: the task exists, with its init pid, and has not run yet.
    Create {
        /// The container (task) id.
        id: String,
        /// Its bundle directory.
        bundle: String,
        /// The init process's stdio, as `Create` received it.
        stdio: StdioPaths,
        /// The init's pid.
        pid: i32,
    },
    /// `/tasks/start`: the init process runs its program.
    Start {
        /// The task id.
        id: String,
        /// The init's pid.
        pid: i32,
    },
    /// `/tasks/exec-added`: an exec process was created (not started yet).
    ExecAdded {
        /// The task id.
        id: String,
        /// The exec id.
        exec_id: String,
    },
    /// `/tasks/exec-started`: an exec process runs its program.
    ExecStarted {
        /// The task id.
        id: String,
        /// The exec id.
        exec_id: String,
        /// The exec's pid.
        pid: i32,
    },
    /// `/tasks/exit`: a process of the task exited.
    Exit {
        /// The task id.
        id: String,
        /// The exec id, or the task id for the init process (what containerd expects).
        exec_id: String,
        /// The process's pid.
        pid: i32,
        /// Its exit code and time.
        exit: ExitStatus,
    },
    /// `/tasks/oom`: the kernel's OOM killer killed a process in the task's cgroup. Comes
    /// before the `/tasks/exit` of the process it killed.
    Oom {
        /// The task id.
        id: String,
    },
    /// `/tasks/paused`: every process of the task is stopped.
    Paused {
        /// The task id.
        id: String,
    },
    /// `/tasks/resumed`: the task runs again.
    Resumed {
        /// The task id.
        id: String,
    },
    /// `/tasks/delete`: the task is gone from the shim.
    Delete {
        /// The task id.
        id: String,
        /// The init's pid.
        pid: i32,
        /// The init's exit.
        exit: ExitStatus,
    },
}

/// Where the service sends events: containerd in the shim, a recorder in tests.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Sends one event. Never fails the caller: an event that cannot be delivered is
    /// logged, and `State` still tells the truth.
    async fn publish(&self, event: TaskEvent);
}

/// Publishes task events of one namespace to containerd.
pub struct Publisher {
    /// The queue to the task that forwards the envelopes.
    queue: mpsc::UnboundedSender<Envelope>,
    /// How many envelopes are queued or on their way: 0 once containerd answered them all.
    pending: Arc<watch::Sender<usize>>,
    /// The containerd namespace of the task (`-namespace`), stamped on every envelope.
    namespace: String,
}

/// How many times an event is tried before it is dropped.
const TRIES: u64 = 6;

impl Publisher {
    /// A publisher to containerd's ttrpc `address` (`TTRPC_ADDRESS`) for `namespace`; its
    /// queue's task starts at once.
    pub fn new(address: String, namespace: String) -> Self {
        let (queue, mut envelopes) = mpsc::unbounded_channel::<Envelope>();
        let pending = Arc::new(watch::Sender::new(0usize));
        let done = pending.clone();
        tokio::spawn(async move {
            let mut client = None;
            while let Some(envelope) = envelopes.recv().await {
                let topic = envelope.topic.clone();
                let request = ForwardRequest {
                    envelope: MessageField::some(envelope),
                    ..Default::default()
                };
                for attempt in 1..=TRIES {
                    match forward(&address, &mut client, &request).await {
                        Ok(()) => break,
                        Err(err) if attempt == TRIES => {
                            warn!("publish {topic}: {err}: dropped after {TRIES} tries")
                        }
                        Err(err) => {
                            warn!("publish {topic}: {err}: trying again");
                            client = None;
                            tokio::time::sleep(Duration::from_secs(attempt)).await;
                        }
                    }
                }
                done.send_modify(|n| *n = n.saturating_sub(1));
            }
        });
        Publisher {
            queue,
            pending,
            namespace,
        }
    }

    /// Waits until every event published so far is answered by containerd (or dropped).
    pub fn flushed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut pending = self.pending.subscribe();
        async move {
            let _ = pending.wait_for(|n| *n == 0).await;
        }
    }

    async fn forward<E: Message>(&self, topic: &str, event: E) {
        let value = match event.write_to_bytes() {
            Ok(value) => value,
            Err(err) => return warn!("encode {topic}: {err}"),
        };
        let envelope = Envelope {
            timestamp: MessageField::some(timestamp(SystemTime::now())),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: MessageField::some(Any {
                type_url: type_url::<E>(),
                value,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.pending.send_modify(|n| *n += 1);
        if self.queue.send(envelope).is_err() {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// One `Events.Forward` call, on `client`, connected first if need be.
async fn forward(
    address: &str,
    client: &mut Option<EventsClient>,
    request: &ForwardRequest,
) -> Result<(), ttrpc::Error> {
    if client.is_none() {
        // containerd gives a plain path in `TTRPC_ADDRESS`; ttrpc wants a scheme.
        let address = match address.contains("://") {
            true => address.to_string(),
            false => format!("unix://{address}"),
        };
        *client = Some(EventsClient::new(Client::connect(&address).await?));
    }
    let Some(events) = client.as_ref() else {
        return Ok(());
    };
    // containerd answers at once; a stuck one is given 5 s, then the event is tried again.
    let context = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    events.forward(context, request).await.map(|_| ())
}

#[async_trait]
impl EventSink for Publisher {
    async fn publish(&self, event: TaskEvent) {
        use topics::*;
        match event {
            TaskEvent::Create {
                id,
                bundle,
                stdio,
                pid,
            } => {
                let io = TaskIO {
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                    terminal: stdio.terminal,
                    ..Default::default()
                };
                let event = TaskCreate {
                    container_id: id,
                    bundle,
                    io: Some(io).into(),
                    pid: pid as u32,
                    ..Default::default()
                };
                self.forward(TASK_CREATE_EVENT_TOPIC, event).await
            }
            TaskEvent::Start { id, pid } => {
                let event = TaskStart {
                    container_id: id,
                    pid: pid as u32,
                    ..Default::default()
                };
                self.forward(TASK_START_EVENT_TOPIC, event).await
            }
            TaskEvent::ExecAdded { id, exec_id } => {
                let event = TaskExecAdded {
                    container_id: id,
                    exec_id,
                    ..Default::default()
                };
                self.forward(TASK_EXEC_ADDED_EVENT_TOPIC, event).await
            }
            TaskEvent::ExecStarted { id, exec_id, pid } => {
                let event = TaskExecStarted {
                    container_id: id,
                    exec_id,
                    pid: pid as u32,
                    ..Default::default()
                };
                self.forward(TASK_EXEC_STARTED_EVENT_TOPIC, event).await
            }
            TaskEvent::Exit {
                id,
                exec_id,
                pid,
                exit,
            } => {
                let event = TaskExit {
                    container_id: id,
                    id: exec_id,
                    pid: pid as u32,
                    exit_status: exit.code,
                    exited_at: Some(timestamp(exit.at)).into(),
                    ..Default::default()
                };
                self.forward(TASK_EXIT_EVENT_TOPIC, event).await
            }
            TaskEvent::Oom { id } => {
                let event = TaskOOM {
                    container_id: id,
                    ..Default::default()
                };
                self.forward(TASK_OOM_EVENT_TOPIC, event).await
            }
            TaskEvent::Paused { id } => {
                let event = TaskPaused {
                    container_id: id,
                    ..Default::default()
                };
                self.forward(TASK_PAUSED_EVENT_TOPIC, event).await
            }
            TaskEvent::Resumed { id } => {
                let event = TaskResumed {
                    container_id: id,
                    ..Default::default()
                };
                self.forward(TASK_RESUMED_EVENT_TOPIC, event).await
            }
            TaskEvent::Delete { id, pid, exit } => {
                let event = TaskDelete {
                    container_id: id.clone(),
                    id,
                    pid: pid as u32,
                    exit_status: exit.code,
                    exited_at: Some(timestamp(exit.at)).into(),
                    ..Default::default()
                };
                self.forward(TASK_DELETE_EVENT_TOPIC, event).await
            }
        }
    }
}

/// The name containerd decodes an event by: every task event is in the protobuf package
/// `containerd.events` (containerd's `api/events/task.proto`).
fn type_url<E: Message>() -> String {
    format!("containerd.events.{}", E::NAME)
}

/// A protobuf `Timestamp` for a point in time.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn type_urls_match_protobuf_reflection() {
        use containerd_shim_protos::protobuf::MessageFull;
        fn check<E: MessageFull>() {
            assert_eq!(type_url::<E>(), E::descriptor().full_name());
        }
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskExit>();
        check::<TaskDelete>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
    }

    #[test]
    fn timestamps_keep_seconds_and_nanoseconds() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let ts = timestamp(at);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_789));
    }
}
