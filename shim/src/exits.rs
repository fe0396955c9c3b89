//! Exits: from `SIGCHLD` to `/tasks/exit`.
//!
//! Every child of the shim is reaped in exactly one place: the reaper of the
//! `containerd-shim` crate. On `SIGCHLD` it calls `waitpid(-1, WNOHANG)` until no child is
//! left to collect, turns each status into containerd's exit code (the exit status, or 128 +
//! the signal number: 143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL) and broadcasts it on
//! its *monitor*. The task service subscribes to the monitor once, before it spawns anything,
//! so no exit can be missed. Nothing else in the shim may wait for a child: a
//! `Child::wait` would race the reaper and one of the two would lose the status.
//!
//! The shim is the task's *child subreaper*: when a process of the task loses its parent
//! (the init `sh` dies while its `sleep` runs), the orphan is re-parented to the shim rather
//! than to pid 1. So when init exits, [`kill_leftovers`] finds every remaining process of the
//! task among the shim's descendants and kills it; the reaper collects them. Once the task is
//! reported STOPPED the shim has no children left, unless a process resisted for the whole
//! [`LEFTOVER_DEADLINE`] (one in uninterruptible sleep, say), which is logged.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use containerd_shim::monitor::{Subject, Subscription};
use log::{debug, warn};

use crate::{procfs, task::Inner};

/// How long [`kill_leftovers`] keeps trying before it reports the task stopped anyway.
const LEFTOVER_DEADLINE: Duration = Duration::from_secs(2);

/// Feeds every exit the reaper reports to the task service, forever.
///
/// When the init process exits, what is left of the task is killed first, and the exits of
/// the exec processes are reported before the init's: an exec's `/tasks/exit` never follows
/// its task's. Most are already queued behind the init's exit; one the reaper has not
/// reached yet is awaited, for at most [`LEFTOVER_DEADLINE`].
pub async fn watch(inner: Arc<Inner>, mut subscription: Subscription) {
    while let Some(event) = subscription.rx.recv().await {
        let Subject::Pid(pid) = event.subject else {
            continue;
        };
        debug!("reaped process {pid}: exit code {}", event.exit_code);
        if inner.is_live_init(pid).await {
            kill_leftovers().await;
            report_exec_exits(&inner, &mut subscription).await;
        }
        inner.process_exited(pid, event.exit_code).await;
    }
}

/// After the init's exit, before it is reported: the exits of the exec processes, those
/// already queued and, for at most [`LEFTOVER_DEADLINE`], those still on their way.
async fn report_exec_exits(inner: &Inner, subscription: &mut Subscription) {
    let deadline = tokio::time::Instant::now() + LEFTOVER_DEADLINE;
    loop {
        let queued = match subscription.rx.try_recv() {
            Ok(queued) => queued,
            Err(_) if !inner.has_live_execs().await => return,
            Err(_) => match tokio::time::timeout_at(deadline, subscription.rx.recv()).await {
                Ok(Some(queued)) => queued,
                _ => return warn!("an exec process outlived its init by {LEFTOVER_DEADLINE:?}"),
            },
        };
        if let Subject::Pid(pid) = queued.subject {
            inner.process_exited(pid, queued.exit_code).await;
        }
    }
}

/// Kills every process left in the task after its init exited, and waits until the reaper
/// collected them (they are all descendants of the shim, thanks to the subreaper).
///
/// The scan and the kills run without an `.await` in between, on the shim's single runtime
/// thread, so the reaper cannot collect a direct child in between and free its pid for
/// reuse. A grandchild reaped by its own parent in those microseconds is the one window left.
pub async fn kill_leftovers() {
    let shim = std::process::id() as i32;
    let deadline = Instant::now() + LEFTOVER_DEADLINE;
    loop {
        let left = match procfs::descendants(shim) {
            Ok(left) => left,
            Err(err) => {
                warn!("cannot list the task's remaining processes: {err}");
                return;
            }
        };
        if left.is_empty() {
            return;
        }
        for process in left.iter().filter(|p| p.state != 'Z') {
            debug!(
                "killing leftover process {} ({})",
                process.pid, process.comm
            );
            // SAFETY: a plain system call.
            unsafe { libc::kill(process.pid, libc::SIGKILL) };
        }
        if Instant::now() >= deadline {
            warn!("{} processes of the task survived SIGKILL", left.len());
            return;
        }
        // Let the reaper (another task on this thread) collect them.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
