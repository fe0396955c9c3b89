//! Exits: from `SIGCHLD` to the task service, and killing what is left of a task.
//!
//! Every child of the shim is reaped in exactly one place: the reaper of the
//! `containerd-shim` crate. On `SIGCHLD` it calls `waitpid(-1, WNOHANG)` until no child is
//! left to collect, turns each status into containerd's exit code (the exit status, or 128 +
//! the signal number: 143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL) and broadcasts it on
//! its *monitor*. The shim subscribes to the monitor once, before the service can spawn
//! anything (`shim.rs`), so no exit can be missed, and [`from_monitor`] hands each exit on
//! as a [`Reaped`]. Nothing else
//! in the shim may wait for a child: a `Child::wait` would race the reaper and one of the
//! two would lose the status. (The core's tests reap for themselves and send [`Reaped`]
//! values on the same kind of channel.)
//!
//! What the service does with an exit (the exit policy) lives in one function,
//! `Service::process_exited` in `service.rs`. This module gives it the tool for the init's
//! exit: [`kill_leftovers`].
//!
//! The shim is the task's *child subreaper*: when a process of the task loses its parent
//! (the init `sh` dies while its `sleep` runs), the orphan is re-parented to the shim rather
//! than to pid 1. So when the init exits, every remaining process of the task is among the
//! shim's descendants, where [`kill_leftovers`] finds and kills it; `members.rs` tells which
//! of them are the task's when the shim serves a pod.

use std::{collections::VecDeque, io, time::Duration};

use containerd_shim::monitor::{Subject, Subscription};
use log::{debug, warn};
use tokio::sync::mpsc;

use crate::{
    procfs::ProcStat,
    sys::{self, Signal},
};

/// How long [`kill_leftovers`] keeps trying before it reports the task stopped anyway.
pub const LEFTOVER_DEADLINE: Duration = Duration::from_secs(2);

/// A process the reaper collected, with the code containerd reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Its pid (free for reuse from now on).
    pub pid: i32,
    /// The exit status, or 128 + the signal that killed it.
    pub code: i32,
}

/// The exits on their way to the exit policy: the reaper's channel, and those the policy read
/// ahead of their turn and set aside.
///
/// While the exit policy of one container waits for the exits of that container's execs
/// (`Service::process_exited`), it reads whatever the reaper sends, which may be another
/// container's exit. That one is [`defer`](ExitQueue::defer)red, not dropped, and comes
/// next.
pub struct ExitQueue {
    reaper: mpsc::UnboundedReceiver<Reaped>,
    deferred: VecDeque<Reaped>,
}

impl ExitQueue {
    /// The queue of the reaper's channel.
    pub fn new(reaper: mpsc::UnboundedReceiver<Reaped>) -> ExitQueue {
        ExitQueue {
            reaper,
            deferred: VecDeque::new(),
        }
    }

    /// The next exit: a deferred one first, else the reaper's next. `None` once the
    /// reaper's channel is closed and nothing is deferred.
    pub async fn next(&mut self) -> Option<Reaped> {
        match self.deferred.pop_front() {
            Some(reaped) => Some(reaped),
            None => self.reaper.recv().await,
        }
    }

    /// The reaper's next exit, if one comes before `deadline` (deferred ones are skipped:
    /// they were read already).
    pub async fn from_reaper_until(&mut self, deadline: tokio::time::Instant) -> Option<Reaped> {
        match self.reaper.try_recv() {
            Ok(reaped) => Some(reaped),
            Err(_) => tokio::time::timeout_at(deadline, self.reaper.recv())
                .await
                .ok()
                .flatten(),
        }
    }

    /// The first deferred exit that `wanted` picks, taken out of the queue.
    pub fn take_deferred(&mut self, wanted: impl Fn(&Reaped) -> bool) -> Option<Reaped> {
        let index = self.deferred.iter().position(wanted)?;
        self.deferred.remove(index)
    }

    /// Sets an exit aside for after the one being handled.
    pub fn defer(&mut self, reaped: Reaped) {
        self.deferred.push_back(reaped);
    }
}

/// The exits the crate's reaper reports, as a channel of [`Reaped`].
pub fn from_monitor(mut subscription: Subscription) -> mpsc::UnboundedReceiver<Reaped> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = subscription.rx.recv().await {
            if let Subject::Pid(pid) = event.subject {
                debug!("reaped process {pid}: exit code {}", event.exit_code);
                let reaped = Reaped {
                    pid,
                    code: event.exit_code,
                };
                if tx.send(reaped).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Where [`kill_leftovers`] looks for the task's processes.
pub trait ProcessTree {
    /// A quick look, which may miss a process (see `procfs::descendants`).
    fn quick(&self) -> io::Result<Vec<ProcStat>>;
    /// A look that cannot miss a process that exists throughout it.
    fn exhaustive(&self) -> io::Result<Vec<ProcStat>>;
}

/// Kills every process left in `tree` and waits until the reaper collected them, for at
/// most [`LEFTOVER_DEADLINE`]. Returns how many processes it found alive or unreaped on its
/// last look (0 once the tree is empty).
///
/// Quick looks find and kill; the tree counts as empty only when an exhaustive look agrees,
/// since a quick look can miss a child exactly while others are exiting.
///
/// Each look and its kills run without an `.await` in between, on the shim's single runtime
/// thread, so the reaper cannot collect a direct child in between and free its pid for
/// reuse. A grandchild reaped by its own parent in those microseconds is the one window left.
pub async fn kill_leftovers(tree: &impl ProcessTree) -> usize {
    let deadline = tokio::time::Instant::now() + LEFTOVER_DEADLINE;
    loop {
        let mut left = tree.quick();
        if left.as_ref().is_ok_and(Vec::is_empty) {
            left = tree.exhaustive();
        }
        let left = match left {
            Ok(left) if left.is_empty() => return 0,
            Ok(left) => left,
            Err(err) => {
                warn!("cannot list the task's remaining processes: {err}");
                return 0;
            }
        };
        for process in left.iter().filter(|p| p.state != 'Z') {
            debug!(
                "killing leftover process {} ({})",
                process.pid, process.comm
            );
            let _ = sys::signal_pid(process.pid, Signal::KILL);
        }
        if tokio::time::Instant::now() >= deadline {
            warn!("{} processes of the task survived SIGKILL", left.len());
            return left.len();
        }
        // Let the reaper (another task on this thread) collect them.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// A unit test's process has no reaper of its own: the test waits for its children.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::Command, time::Instant};

    use super::*;

    /// A tree whose quick look always misses everything, as the kernel's `children` lists
    /// can while children exit; the exhaustive look sees one real process.
    struct QuickLookMisses(i32);

    impl ProcessTree for QuickLookMisses {
        fn quick(&self) -> io::Result<Vec<ProcStat>> {
            Ok(Vec::new())
        }

        fn exhaustive(&self) -> io::Result<Vec<ProcStat>> {
            Ok(ProcStat::read(self.0).into_iter().collect())
        }
    }

    #[tokio::test]
    async fn a_process_the_quick_look_misses_is_still_killed() {
        let mut child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // This test plays the reaper for its own child, and gives up after 5 s.
        let reaper = std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return Some(status);
                }
                if started.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let started = Instant::now();
        let left = kill_leftovers(&QuickLookMisses(pid)).await;
        let status = reaper.join().expect("reaper");
        assert_eq!(left, 0, "the process was still there after the deadline");
        let status = status.expect("kill_leftovers never killed the process");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(
            started.elapsed() < LEFTOVER_DEADLINE,
            "{:?}",
            started.elapsed()
        );
    }
}
