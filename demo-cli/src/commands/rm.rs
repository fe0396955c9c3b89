//! `shim-demo rm`: delete the task (reporting its exit code) and the container.

use anyhow::{Context, Result};

use crate::{api::Containerd, fifo::FifoSet, signals};

/// Deletes task and container `id`; with `force`, kills a running task first.
pub async fn run(api: &Containerd, id: &str, force: bool) -> Result<()> {
    if api.task(id).await?.is_some() {
        if force {
            let _ = api.kill(id, libc::SIGKILL as u32, true).await;
            let _ = api.wait(id).await;
        }
        let code = api
            .delete_task(id)
            .await
            .with_context(|| format!("delete task {id}"))?;
        eprintln!("task {id} exited with {}", signals::explain_exit(code));
    }
    api.delete_container(id)
        .await
        .with_context(|| format!("delete container {id}"))?;
    FifoSet::for_task(&api.address, &api.namespace, id).remove();
    Ok(())
}
