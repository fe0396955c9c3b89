//! Events the shim publishes to containerd: `/tasks/create`, `/tasks/start`, `/tasks/exit`,
//! `/tasks/delete`, and for exec processes and pausing `/tasks/exec-added`,
//! `/tasks/exec-started`, `/tasks/paused`, `/tasks/resumed`.
//!
//! A shim does not answer event subscriptions itself. It forwards each event over ttrpc to
//! the address containerd gave in `TTRPC_ADDRESS` (the `Events.Forward` RPC), and containerd
//! fans them out to its subscribers (`ctr events`). The crate's `RemotePublisher` sends
//! them from one queue, in order while containerd answers. An event that fails (containerd
//! restarting) is queued again behind later ones after a pause of 1 s, then 2 s, and so
//! on, and dropped after six tries (about 20 s). A client that reconnects after a restart
//! asks `State`, which is always right, rather than trusting it saw every event.
//!
//! Order matters to clients: `ctr run` waits for `/tasks/exit` after `/tasks/start`. The
//! task service publishes under its state lock, so the queue sees them in the order they
//! happened (see `task.rs`).
//!
//! Each event travels as a protobuf `Any`: its type name (`containerd.events.TaskExit`)
//! and its encoded bytes. The name comes from the generated type's `Message::NAME`, not
//! from protobuf reflection: building the reflection tables (what the crate's `publish`
//! does through `descriptor_dyn()`) costs a shim hundreds of KiB of heap it never frees.

use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::{
    events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
        TaskResumed, TaskStart,
    },
    protobuf::{
        well_known_types::{any::Any, timestamp::Timestamp},
        Message, MessageField,
    },
    shim::{event::Envelope, events::ForwardRequest},
    shim_async::Events,
    topics,
    ttrpc::r#async::TtrpcContext,
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

    async fn publish<E: Message>(&self, topic: &str, event: E) {
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
        let request = ForwardRequest {
            envelope: MessageField::some(envelope),
            ..Default::default()
        };
        // `forward` only queues the envelope (see the module docs); the context is unused
        // there. It waits up to 3 s when the queue (1024 events) is full.
        let context = TtrpcContext {
            mh: Default::default(),
            metadata: Default::default(),
            timeout_nano: 0,
        };
        if let Err(err) = self.remote.forward(&context, request).await {
            // The queue stayed full for 3 s: containerd is gone. The state is still correct
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
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, event).await;
    }

    /// `/tasks/start`: the init process runs its program.
    pub async fn task_start(&self, id: &str, pid: i32) {
        let event = TaskStart {
            container_id: id.to_string(),
            pid: pid as u32,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, event).await;
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
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, event).await;
    }

    /// `/tasks/exec-added`: an exec process was created (not started yet).
    pub async fn exec_added(&self, id: &str, exec_id: &str) {
        let event = TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, event)
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
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, event)
            .await;
    }

    /// `/tasks/paused`: every process of the task is stopped.
    pub async fn task_paused(&self, id: &str) {
        let event = TaskPaused {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, event).await;
    }

    /// `/tasks/resumed`: the task runs again.
    pub async fn task_resumed(&self, id: &str) {
        let event = TaskResumed {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, event).await;
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
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, event).await;
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
