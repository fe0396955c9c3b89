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
    collections::{HashMap, VecDeque},
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
/// its execs) from the moment its model hands it over until its exit is routed.
#[derive(Default)]
pub struct Router {
    inner: Mutex<Routes>,
}

#[derive(Default)]
struct Routes {
    /// By pid; more than one while a pid reused by a new process still has its old exit on
    /// the way.
    by_pid: HashMap<i32, Vec<Route>>,
    /// The last exits no route claimed: a task's descendants, and a process whose model
    /// has not handed it over yet (it exited at once); [`Router::add`] looks here first.
    unclaimed: VecDeque<Reaped>,
}

/// The exit of one child ([`Router::child_exit`]).
pub struct ChildExit(mpsc::UnboundedReceiver<Reaped>);

impl ChildExit {
    /// Its exit code (the exit status, or 128 + the signal).
    pub async fn code(mut self) -> i32 {
        // The sender lives in the route until the exit is sent: `None` cannot happen while
        // the router lives.
        self.0.recv().await.map_or(-1, |reaped| reaped.code)
    }
}

/// How many unclaimed exits are kept.
const UNCLAIMED_KEPT: usize = 64;

impl Router {
    /// A router fed by `exits` (which must have been subscribed before anything was
    /// spawned): every exit is routed, in a task of its own, as it comes.
    pub fn serve(mut exits: mpsc::UnboundedReceiver<Reaped>) -> Arc<Router> {
        let router = Arc::new(Router::default());
        let routes = router.clone();
        tokio::spawn(async move {
            while let Some(reaped) = exits.recv().await {
                routes.route(reaped);
            }
        });
        router
    }

    /// The exit code of `child`, a child the shim just spawned, once the reaper collects it.
    /// Called right after the spawn, with no `.await` between (the reaper runs on this same
    /// thread): the pid is still the child's, alive or a zombie. Also returns the child's
    /// pidfd, which says "exited" from then on.
    pub fn child_exit(&self, pid: i32) -> std::io::Result<(Arc<OwnedFd>, ChildExit)> {
        let pidfd = Arc::new(sys::pidfd_open(pid)?);
        let (tx, rx) = mpsc::unbounded_channel();
        self.add(pid, &pidfd, &tx);
        Ok((pidfd, ChildExit(rx)))
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Nothing panics while holding it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the exit of process `pid` (behind `pidfd`) to `to`: at once if the reaper
    /// already collected it, when it comes otherwise.
    pub fn add(&self, pid: i32, pidfd: &Arc<OwnedFd>, to: &mpsc::UnboundedSender<Reaped>) {
        let mut routes = self.routes();
        let early = routes.unclaimed.iter().rposition(|r| r.pid == pid);
        if let Some(index) = early.filter(|_| sys::pidfd_exited(&**pidfd)) {
            if let Some(reaped) = routes.unclaimed.remove(index) {
                let _ = to.send(reaped);
                return;
            }
        }
        routes.by_pid.entry(pid).or_default().push(Route {
            pidfd: pidfd.clone(),
            to: to.clone(),
        });
    }

    /// Hands `reaped` to its container; false for a process no container claims (a
    /// descendant of a task, or one not handed over yet: kept a while for [`Router::add`]).
    ///
    /// A pid is free for reuse once reaped: a process made since may have it too, while the
    /// exit of the first is still on its way. The one that exited is the oldest route whose
    /// pidfd says so; a route whose process still runs is not this exit's.
    pub fn route(&self, reaped: Reaped) -> bool {
        let route = {
            let mut routes = self.routes();
            let chosen = routes.by_pid.get_mut(&reaped.pid).and_then(|candidates| {
                let index = candidates
                    .iter()
                    .position(|r| sys::pidfd_exited(&*r.pidfd))?;
                Some(candidates.remove(index))
            });
            if routes.by_pid.get(&reaped.pid).is_some_and(Vec::is_empty) {
                routes.by_pid.remove(&reaped.pid);
            }
            match chosen {
                Some(route) => route,
                None => {
                    routes.unclaimed.push_back(reaped);
                    if routes.unclaimed.len() > UNCLAIMED_KEPT {
                        routes.unclaimed.pop_front();
                    }
                    return false;
                }
            }
        };
        // A container deleted meanwhile has closed its channel: nobody waits for it.
        let _ = route.to.send(reaped);
        true
    }
}

// A unit test's process has no reaper of its own: the test waits for its children.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    /// A process model may hand a process over after the reaper collected it (it exited at
    /// once): its exit is kept, and delivered when the route comes.
    #[test]
    fn an_exit_seen_before_its_route_is_delivered_when_the_route_comes() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        let pidfd = Arc::new(sys::pidfd_open(pid).expect("pidfd"));
        let status = child.wait().expect("wait");
        let router = Router::default();
        let reaped = Reaped {
            pid,
            code: status.code().unwrap_or(-1),
        };
        assert!(!router.route(reaped), "no route yet: kept, not claimed");
        let (tx, mut rx) = mpsc::unbounded_channel();
        router.add(pid, &pidfd, &tx);
        assert_eq!(rx.try_recv().ok(), Some(reaped));
        assert!(router.routes().by_pid.is_empty(), "no route left behind");
    }

    /// A process that still runs is never given an exit of its pid's previous owner.
    #[test]
    fn a_running_process_is_not_given_an_old_exit_of_its_pid() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let pidfd = Arc::new(sys::pidfd_open(pid).expect("pidfd"));
        let router = Router::default();
        // As if a descendant with the same pid had exited before.
        assert!(!router.route(Reaped { pid, code: 3 }));
        let (tx, mut rx) = mpsc::unbounded_channel();
        router.add(pid, &pidfd, &tx);
        assert!(rx.try_recv().is_err(), "an old exit went to a live process");
        let _ = child.kill();
        let status = child.wait().expect("wait");
        assert!(router.route(Reaped { pid, code: 128 + 9 }));
        assert_eq!(rx.try_recv().ok().map(|r| r.code), Some(137), "{status:?}");
    }
}
