//! `shim-demo kill`: signal a task (SIGTERM unless told otherwise).

use anyhow::{Context, Result};

use crate::{api::Containerd, signals};

/// Sends `signal` (name or number) to task `id`, or to all of its processes.
pub async fn run(api: &Containerd, id: &str, signal: &str, all: bool) -> Result<()> {
    let number = signals::parse(signal)?;
    api.kill(id, number, all)
        .await
        .with_context(|| format!("kill task {id} with {}", signals::name(number)))
}
