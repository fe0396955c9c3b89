//! Attaching to a task: its output on our terminal, our input into it, our signals to it.
//!
//! This is what `ctr task start` (attached) and `ctr task attach` do. A client never talks
//! to the task directly: it reads and writes the FIFOs whose paths the task was created
//! with, and it turns Ctrl-C (SIGINT) and SIGTERM into `Kill` requests, which containerd
//! passes to the shim.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::{
    io::AsyncWriteExt,
    signal::unix::{signal, SignalKind},
};

use crate::{api::Containerd, fifo};

/// How long output keeps flowing after the task exited, for its last lines.
const DRAIN: Duration = Duration::from_millis(300);

/// The FIFO paths of a task, as containerd recorded them.
pub struct Stdio {
    /// stdin FIFO, empty for none.
    pub stdin: String,
    /// stdout FIFO, empty for none.
    pub stdout: String,
    /// stderr FIFO, empty for none.
    pub stderr: String,
}

/// Copies the task's output to ours and our input to it, forwards SIGINT and SIGTERM,
/// and returns the task's exit code once it exits.
pub async fn attach(api: &Containerd, id: &str, stdio: &Stdio) -> Result<u32> {
    let mut copies = Vec::new();
    if !stdio.stdout.is_empty() {
        let mut from = fifo::open_reader(stdio.stdout.as_ref())?;
        copies.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut tokio::io::stdout()).await;
        }));
    }
    if !stdio.stderr.is_empty() {
        let mut from = fifo::open_reader(stdio.stderr.as_ref())?;
        copies.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut tokio::io::stderr()).await;
        }));
    }
    if !stdio.stdin.is_empty() {
        let mut to = fifo::open_writer(stdio.stdin.as_ref())?;
        // Our stdin reaching end-of-file does not close the task's stdin (CloseIO would).
        copies.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to).await;
            let _ = to.flush().await;
        }));
    }

    let mut interrupt = signal(SignalKind::interrupt()).context("catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catch SIGTERM")?;
    let wait = api.wait(id);
    tokio::pin!(wait);
    let code = loop {
        tokio::select! {
            exit = &mut wait => break exit.context("wait for the task")?,
            _ = interrupt.recv() => api.kill(id, libc::SIGINT as u32, false).await.context("forward SIGINT")?,
            _ = terminate.recv() => api.kill(id, libc::SIGTERM as u32, false).await.context("forward SIGTERM")?,
        }
    };
    tokio::time::sleep(DRAIN).await;
    for copy in copies {
        copy.abort();
    }
    Ok(code)
}
