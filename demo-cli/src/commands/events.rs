//! `shim-demo events`: containerd's event stream, as `ctr events` prints it.

use anyhow::{Context, Result};
use containerd_client::{events, types::Envelope};
use prost::Message;

use crate::api::Containerd;

/// Prints events until interrupted.
pub async fn run(api: &Containerd) -> Result<()> {
    let mut stream = api.subscribe(&[]).await.context("subscribe to events")?;
    while let Some(envelope) = stream.message().await? {
        println!("{}", format_envelope(&envelope));
    }
    Ok(())
}

/// `<seconds> <namespace> <topic> <payload>`, the payload decoded for task events.
pub fn format_envelope(envelope: &Envelope) -> String {
    let seconds = envelope.timestamp.as_ref().map_or(0, |t| t.seconds);
    let payload = envelope
        .event
        .as_ref()
        .map(|any| decode_task_event(&envelope.topic, &any.value))
        .unwrap_or(serde_json::Value::Null);
    format!(
        "{seconds} {} {} {payload}",
        envelope.namespace, envelope.topic
    )
}

/// The fields of a `/tasks/*` event the demo cares about, as JSON.
pub fn decode_task_event(topic: &str, bytes: &[u8]) -> serde_json::Value {
    use serde_json::json;
    match topic {
        "/tasks/create" => events::TaskCreate::decode(bytes)
            .map(|e| json!({ "container_id": e.container_id, "pid": e.pid }))
            .unwrap_or_default(),
        "/tasks/start" => events::TaskStart::decode(bytes)
            .map(|e| json!({ "container_id": e.container_id, "pid": e.pid }))
            .unwrap_or_default(),
        "/tasks/exit" => events::TaskExit::decode(bytes)
            .map(|e| json!({ "container_id": e.container_id, "id": e.id, "pid": e.pid, "exit_status": e.exit_status }))
            .unwrap_or_default(),
        "/tasks/delete" => events::TaskDelete::decode(bytes)
            .map(|e| json!({ "container_id": e.container_id, "pid": e.pid, "exit_status": e.exit_status }))
            .unwrap_or_default(),
        _ => json!({ "bytes": bytes.len() }),
    }
}
