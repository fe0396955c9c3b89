//! Exits: from `SIGCHLD` to the container whose process exited.
//!
//! Every child of the shim is reaped in exactly one place: the reaper of the
//! `containerd-shim` crate. On `SIGCHLD` it calls `waitpid(-1, WNOHANG)` until no child is
//! left to collect, turns each status into containerd's exit code (the exit status, or 128 +
//! the signal number: 143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL) and broadcasts it on
//! its *monitor*. The shim subscribes to the monitor once, before the service can spawn
//! anything (`shim.rs`), so no exit can be missed, and [`from_monitor`] hands each exit on
//! as a [`Reaped`]. Nothing else in the shim may wait for a child: a `Child::wait` would
//! race the reaper and one of the two would lose the status. (The core's tests reap for
//! themselves and send [`Reaped`] values on the same kind of channel.)
//!
//! The [`Router`] then sends each exit to the one container it belongs to, on that
//! container's own channel, where the container's exit policy handles it
//! (`Container::process_exited` in `container.rs`). Each container handles its exits in its
//! own task, so one container's slow exit (leftovers that take time to die) never holds up
//! another's.
//!
//! The shim is the task's *child subreaper*: when a process of the task loses its parent
//! (the init `sh` dies while its `sleep` runs), the orphan is re-parented to the shim rather
//! than to pid 1. Such descendants are reaped too, and routed nowhere.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use containerd_shim::monitor::{Subject, Subscription};
use log::debug;
use tokio::sync::mpsc;

use crate::sys;

/// How long the end of a task may take: its leftovers' SIGKILL, then its execs' exits.
pub const LEFTOVER_DEADLINE: Duration = Duration::from_secs(2);

/// A process the reaper collected, with the code containerd reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Its pid (free for reuse from now on).
    pub pid: i32,
    /// The exit status, or 128 + the signal that killed it.
    pub code: i32,
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

/// Where the exit of a pid goes: the container that made the process.
struct Route {
    /// The process, to tell it apart from a later one with the same pid.
    pidfd: Arc<OwnedFd>,
    /// Its container's exit channel.
    to: mpsc::UnboundedSender<Reaped>,
}

/// The routes of the shim's processes, by pid: each process a container made (its init and
/// its execs) from its spawn until its exit is routed.
#[derive(Default)]
pub struct Router {
    routes: Mutex<HashMap<i32, Vec<Route>>>,
}

impl Router {
    /// Sends the exit of process `pid` (behind `pidfd`) to `to`. Must be called before the
    /// reaper can run after the spawn (no `.await` in between), so that no exit arrives
    /// unrouted.
    pub fn add(&self, pid: i32, pidfd: &Arc<OwnedFd>, to: &mpsc::UnboundedSender<Reaped>) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.entry(pid).or_default().push(Route {
            pidfd: pidfd.clone(),
            to: to.clone(),
        });
    }

    /// Hands `reaped` to its container; false for a process no container made (a
    /// descendant of a task).
    ///
    /// A pid is free for reuse once reaped: a process made since may have it too, while the
    /// exit of the first is still on its way. The one that exited is the oldest route whose
    /// pidfd says so.
    pub fn route(&self, reaped: Reaped) -> bool {
        let route = {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            let Some(candidates) = routes.get_mut(&reaped.pid) else {
                return false;
            };
            let index = candidates
                .iter()
                .position(|r| sys::pidfd_exited(&*r.pidfd))
                .unwrap_or(0);
            let route = candidates.remove(index);
            if candidates.is_empty() {
                routes.remove(&reaped.pid);
            }
            route
        };
        // A container deleted meanwhile has closed its channel: nobody waits for it.
        let _ = route.to.send(reaped);
        true
    }
}
