//! Events the shim publishes to containerd: `/tasks/create`, `/tasks/start`, `/tasks/exit`,
//! `/tasks/delete`, and for exec processes and pausing `/tasks/exec-added`,
//! `/tasks/exec-started`, `/tasks/paused`, `/tasks/resumed`.
//!
//! A shim does not answer event subscriptions itself. It forwards each event over ttrpc to
//! the address containerd gave in `TTRPC_ADDRESS` (the `Events.Forward` RPC), and containerd
//! fans them out to its subscribers (`ctr events`). The crate's `RemotePublisher` queues
//! them in order and retries while containerd is away.
//!
//! Order matters to clients: `ctr run` waits for `/tasks/exit` after `/tasks/start`. The
//! task service publishes under its state lock, so the queue sees them in the order they
//! happened (see `task.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::{publisher::RemotePublisher, Context};
use containerd_shim_protos::{
    events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
        TaskResumed, TaskStart,
    },
    protobuf::{well_known_types::timestamp::Timestamp, MessageDyn},
    topics,
};
use log::warn;

use crate::process::ExitStatus;

/// Publishes task events for one namespace.
pub struct Publisher {
    /// The crate's ttrpc client to containerd's event service.
    remote: RemotePublisher,
    /// The containerd namespace of the task (`-namespace`), stamped on every envelope.
    namespace: String,
}

impl Publisher {
    /// Wraps the crate's publisher for `namespace`.
    pub fn new(remote: RemotePublisher, namespace: String) -> Self {
        Publisher { remote, namespace }
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let sent = self
            .remote
            .publish(Context::default(), topic, &self.namespace, event)
            .await;
        if let Err(err) = sent {
            // The queue is full or closed: containerd is gone. The state is still correct
            // and `State` still answers, so the shim goes on.
            warn!("publish {topic}: {err}");
        }
    }

    /// `/tasks/create`: the task exists, with its init pid, and has not run yet.
    pub async fn task_create(&self, id: &str, bundle: &str, io: TaskIO, pid: i32) {
        let event = TaskCreate {
            container_id: id.to_string(),
            bundle: bundle.to_string(),
            io: Some(io).into(),
            pid: pid as u32,
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/start`: the init process runs its program.
    pub async fn task_start(&self, id: &str, pid: i32) {
        let event = TaskStart {
            container_id: id.to_string(),
            pid: pid as u32,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/exit`: a process of the task exited; `exec_id` is the task id for init.
    pub async fn task_exit(&self, id: &str, exec_id: &str, pid: i32, exit: ExitStatus) {
        let event = TaskExit {
            container_id: id.to_string(),
            id: exec_id.to_string(),
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/exec-added`: an exec process was created (not started yet).
    pub async fn exec_added(&self, id: &str, exec_id: &str) {
        let event = TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/exec-started`: an exec process runs its program.
    pub async fn exec_started(&self, id: &str, exec_id: &str, pid: i32) {
        let event = TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid: pid as u32,
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/paused`: every process of the task is stopped.
    pub async fn task_paused(&self, id: &str) {
        let event = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/resumed`: the task runs again.
    pub async fn task_resumed(&self, id: &str) {
        let event = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// `/tasks/delete`: the task is gone from the shim.
    pub async fn task_delete(&self, id: &str, pid: i32, exit: ExitStatus) {
        let event = TaskDelete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
    }
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
    fn timestamps_keep_seconds_and_nanoseconds() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let ts = timestamp(at);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_789));
    }
}
