//! `shim-demo attach`: join a running task's stdio, as `ctr task attach` does.

use anyhow::{Context, Result};

use crate::{
    api::Containerd,
    attach::{self, Stdio},
};

/// Attaches to task `id` until it exits; returns its exit code.
pub async fn run(api: &Containerd, id: &str) -> Result<u32> {
    let task = api
        .task(id)
        .await?
        .with_context(|| format!("container {id} has no task"))?;
    let stdio = Stdio {
        stdin: task.stdin,
        stdout: task.stdout,
        stderr: task.stderr,
    };
    attach::attach(api, id, &stdio).await
}
