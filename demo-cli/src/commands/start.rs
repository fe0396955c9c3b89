//! `shim-demo start`: create and start the task; attached unless `--detach`.

use anyhow::{Context, Result};

use crate::{
    api::{describe, Containerd},
    attach::{self, Stdio},
    fifo::FifoSet,
};

/// Starts container `id`'s task. Detached, returns 0 once it runs; attached, forwards
/// stdio and signals, deletes the task when it exits and returns its exit code.
pub async fn run(api: &Containerd, id: &str, detach: bool) -> Result<u32> {
    let fifos = FifoSet::for_task(&api.address, &api.namespace, id);
    fifos.create()?;
    if let Err(status) = api.create_task(id, &fifos).await {
        fifos.remove();
        anyhow::bail!("create task {id}: {}", explain_create_error(&status));
    }
    if let Err(status) = api.start_task(id).await {
        let _ = api.delete_task(id).await;
        fifos.remove();
        anyhow::bail!("start task {id}: {}", describe(&status));
    }
    if detach {
        return Ok(0);
    }
    let stdio = Stdio {
        stdin: fifos.stdin_path(),
        stdout: fifos.stdout_path(),
        stderr: fifos.stderr_path(),
    };
    let code = attach::attach(api, id, &stdio).await?;
    api.delete_task(id).await.context("delete the task")?;
    fifos.remove();
    Ok(code)
}

/// containerd's error when it cannot start a shim is long; say what it means first.
pub fn explain_create_error(status: &containerd_client::tonic::Status) -> String {
    let message = status.message();
    let missing = [
        "binary not installed",
        "executable file not found",
        "no such file",
    ];
    if missing.iter().any(|m| message.contains(m)) {
        format!(
            "containerd could not find the runtime's shim binary on its PATH ({}). \
             Install it, e.g. `make shim && install target/shim/containerd-shim-sample-v2 /usr/local/bin/`",
            describe(status)
        )
    } else {
        describe(status)
    }
}
