//! Exits: from `SIGCHLD` to the container whose process exited.
//!
//! Every child of the shim is reaped in exactly one place: [`reaper`]. On `SIGCHLD` it calls
//! `waitpid(-1, WNOHANG)` until no child is left to collect (signals merge: one may stand
//! for many exits), turns each status into containerd's exit code (the exit status, or 128 +
//! the signal number: 143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL) and sends it on as a
//! [`Reaped`]. The daemon (`task/daemon.rs`) starts it before anything can be spawned, so no
//! exit can be missed; `delete` starts it too, for the runtime commands it runs. Nothing else
//! in the shim may wait for a child (`clippy.toml` forbids it): a `Child::wait` would race
//! the reaper and one of the two would lose the status. (The core's tests reap for
//! themselves and send [`Reaped`] values on the same kind of channel.)
//!
//! The [`Router`] then sends each exit to the one container it belongs to, on that
//! container's own channel, where the container's exit policy handles it
//! (`Container::process_exited` in `task/container.rs`). Each container handles its exits in its
//! own task, so one container's slow exit (leftovers that take time to die) never holds up
//! another's.
//!
//! The shim is the task's *child subreaper*: when a process of the task loses its parent
//! (the init `sh` dies while its `sleep` runs), the orphan is re-parented to the shim rather
//! than to pid 1. Such descendants are reaped too, and routed nowhere.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use log::{debug, warn};
use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

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

/// The one reaper: on every `SIGCHLD`, collects each child that has exited
/// (`waitpid(-1, WNOHANG)` until none is left: signals merge, one may stand for many) and
/// sends its exit code on the channel it returns. Call it once, before anything is spawned.
pub fn reaper() -> std::io::Result<mpsc::UnboundedReceiver<Reaped>> {
    let mut sigchld = signal(SignalKind::child())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            loop {
                #[allow(clippy::disallowed_methods)] // this is the one reaper
                let status = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG));
                let reaped = match status {
                    Ok(WaitStatus::Exited(pid, code)) => Reaped {
                        pid: pid.as_raw(),
                        code,
                    },
                    Ok(WaitStatus::Signaled(pid, signal, _)) => Reaped {
                        pid: pid.as_raw(),
                        code: 128 + signal as i32,
                    },
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Err(Errno::EINTR) | Ok(_) => continue,
                    Err(err) => {
                        warn!("waitpid: {err}");
                        break;
                    }
                };
                debug!("reaped process {}: exit code {}", reaped.pid, reaped.code);
                let _ = tx.send(reaped);
            }
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Where the exit of a pid goes: the container that made the process.
struct Route {
    /// The process, to tell it apart from a later one with the same pid; `None` when it
    /// had exited before a handle could be taken (its exit is then the pid's next one).
    pidfd: Option<Arc<OwnedFd>>,
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
    /// How many exits have been routed: each exit's sequence number.
    seq: u64,
    /// The windows open ([`Router::window`]): how many start after each sequence number.
    windows: BTreeMap<u64, usize>,
    /// The exits no route claimed since the oldest open window began, with their sequence
    /// numbers: a task's descendants, and a process whose model has not handed it over yet
    /// (it exited at once). Without a window open, none is kept: nobody could ask for it.
    unclaimed: VecDeque<(u64, Reaped)>,
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

/// A window on the exits: opened before a process model makes a process, it keeps every
/// exit reaped from then on that no route claims, however many, until it is closed
/// (dropped); [`Router::add`] matches a process with those only. An exit from before the
/// window, under a pid since reused, can never be taken for the new process's, and a
/// burst of orphans' exits cannot push the right one out.
pub struct Window {
    router: Arc<Router>,
    /// The sequence number of the last exit routed before it opened.
    since: u64,
}

impl Drop for Window {
    fn drop(&mut self) {
        let mut routes = self.router.routes();
        if let Some(count) = routes.windows.get_mut(&self.since) {
            *count -= 1;
            if *count == 0 {
                routes.windows.remove(&self.since);
            }
        }
        // What no open window can ask for any more goes.
        match routes.windows.keys().next().copied() {
            Some(oldest) => routes.unclaimed.retain(|(seq, _)| *seq > oldest),
            None => routes.unclaimed.clear(),
        }
    }
}

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

    /// Opens a window on the exits, to be held while a process is made and until it is
    /// handed to [`Router::add`].
    pub fn window(self: &Arc<Self>) -> Window {
        let mut routes = self.routes();
        let since = routes.seq;
        *routes.windows.entry(since).or_default() += 1;
        Window {
            router: self.clone(),
            since,
        }
    }

    /// The exit code of `child`, a child the shim just spawned, once the reaper collects it.
    /// Called right after the spawn, with no `.await` between (the reaper runs on this same
    /// thread): the pid is still the child's, alive or a zombie. Also returns the child's
    /// pidfd, which says "exited" from then on.
    pub fn child_exit(self: &Arc<Self>, pid: i32) -> std::io::Result<(Arc<OwnedFd>, ChildExit)> {
        let pidfd = Arc::new(sys::pidfd_open(pid)?);
        let (tx, rx) = mpsc::unbounded_channel();
        // No exit could be reaped since the spawn: a window from now on holds them all.
        let window = self.window();
        self.add(pid, Some(pidfd.clone()), &tx, &window);
        Ok((pidfd, ChildExit(rx)))
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Nothing panics while holding it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the exit of process `pid`, made while `window` was open, to `to`: at once if
    /// the reaper has collected it since the window opened, when it comes otherwise.
    ///
    /// `pidfd` is a handle the model took while the process could not have been reaped (a
    /// `clone3`'s `CLONE_PIDFD`, runc's `--pidfd-socket`, a VMM's own). Without one, the
    /// router takes it here: no exit of `pid` since the window opened means the pid is
    /// still the process's, or its exit is on its way (then there is no handle to take, and
    /// the pid's next exit is its). Returns the handle, for the signals to the process;
    /// `None` once it has exited.
    pub fn add(
        &self,
        pid: i32,
        pidfd: Option<Arc<OwnedFd>>,
        to: &mpsc::UnboundedSender<Reaped>,
        window: &Window,
    ) -> Option<Arc<OwnedFd>> {
        let mut routes = self.routes();
        // A pidfd of a process still running says an exit of its pid is another's (reused).
        let exited = pidfd.as_ref().is_none_or(|p| sys::pidfd_exited(&**p));
        let early = routes
            .unclaimed
            .iter()
            .position(|(seq, r)| exited && *seq > window.since && r.pid == pid);
        if let Some(index) = early {
            if let Some((_, reaped)) = routes.unclaimed.remove(index) {
                let _ = to.send(reaped);
                return pidfd;
            }
        }
        let pidfd = pidfd.or_else(|| sys::pidfd_open(pid).ok().map(Arc::new));
        routes.by_pid.entry(pid).or_default().push(Route {
            pidfd: pidfd.clone(),
            to: to.clone(),
        });
        pidfd
    }

    /// Hands `reaped` to its container; false for a process no container claims (a
    /// descendant of a task, or one not handed over yet: kept while a window is open, for
    /// [`Router::add`]).
    ///
    /// A pid is free for reuse once reaped: a process made since may have it too, while the
    /// exit of the first is still on its way. The one that exited is the oldest route whose
    /// pidfd says so (or that has none); a route whose process still runs is not this
    /// exit's.
    pub fn route(&self, reaped: Reaped) -> bool {
        let route = {
            let mut routes = self.routes();
            routes.seq += 1;
            let seq = routes.seq;
            let chosen = routes.by_pid.get_mut(&reaped.pid).and_then(|candidates| {
                let index = candidates.iter().position(|r| {
                    r.pidfd
                        .as_ref()
                        .is_none_or(|pidfd| sys::pidfd_exited(&**pidfd))
                })?;
                Some(candidates.remove(index))
            });
            if routes.by_pid.get(&reaped.pid).is_some_and(Vec::is_empty) {
                routes.by_pid.remove(&reaped.pid);
            }
            match chosen {
                Some(route) => route,
                None => {
                    if !routes.windows.is_empty() {
                        routes.unclaimed.push_back((seq, reaped));
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

    fn reaped(pid: i32, code: i32) -> Reaped {
        Reaped { pid, code }
    }

    /// A process model may hand a process over after the reaper collected it (it exited at
    /// once): its exit is kept, and delivered when the route comes.
    #[test]
    fn an_exit_seen_before_its_route_is_delivered_when_the_route_comes() {
        let router = Arc::new(Router::default());
        let window = router.window();
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        let pidfd = Arc::new(sys::pidfd_open(pid).expect("pidfd"));
        let status = child.wait().expect("wait");
        let exit = reaped(pid, status.code().unwrap_or(-1));
        assert!(!router.route(exit), "no route yet: kept, not claimed");
        let (tx, mut rx) = mpsc::unbounded_channel();
        router.add(pid, Some(pidfd), &tx, &window);
        assert_eq!(rx.try_recv().ok(), Some(exit));
        assert!(router.routes().by_pid.is_empty(), "no route left behind");
        drop(window);
        assert!(
            router.routes().unclaimed.is_empty(),
            "nothing kept for nobody"
        );
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
        let router = Arc::new(Router::default());
        let window = router.window();
        // As if a descendant with the same pid had exited before.
        assert!(!router.route(reaped(pid, 3)));
        let (tx, mut rx) = mpsc::unbounded_channel();
        router.add(pid, Some(pidfd), &tx, &window);
        assert!(rx.try_recv().is_err(), "an old exit went to a live process");
        let _ = child.kill();
        let status = child.wait().expect("wait");
        assert!(router.route(reaped(pid, 128 + 9)));
        assert_eq!(rx.try_recv().ok().map(|r| r.code), Some(137), "{status:?}");
    }

    /// A model with no pidfd of its own (runc before 1.2 hands over a pid only): an exit of
    /// the same pid from before the window (a process that had the pid before) is never
    /// taken for the new process's; the one after is.
    #[test]
    fn an_exit_from_before_the_window_is_not_the_new_process_s() {
        let router = Arc::new(Router::default());
        let before = router.window();
        // A pid no process has: the router cannot take a pidfd of its own.
        let pid = i32::MAX - 7;
        assert!(!router.route(reaped(pid, 1)), "the old owner's exit");
        let window = router.window();
        drop(before);
        let (tx, mut rx) = mpsc::unbounded_channel();
        assert!(router.add(pid, None, &tx, &window).is_none());
        assert!(
            rx.try_recv().is_err(),
            "an exit from before the window was taken"
        );
        assert!(router.route(reaped(pid, 0)), "the new process's exit");
        assert_eq!(rx.try_recv().ok(), Some(reaped(pid, 0)));
    }

    /// A hostPID pod: 200 orphans exit between the reap of a fast exec and its route. The
    /// window keeps them all, and the exec's exit is still found.
    #[test]
    fn two_hundred_orphan_exits_do_not_push_an_exec_s_exit_out() {
        let router = Arc::new(Router::default());
        let window = router.window();
        let pid = i32::MAX - 9;
        assert!(
            !router.route(reaped(pid, 42)),
            "the exec, reaped before its route"
        );
        for orphan in 0..200 {
            assert!(!router.route(reaped(i32::MAX - 1000 - orphan, 0)));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        assert!(
            router.add(pid, None, &tx, &window).is_none(),
            "gone: no pidfd"
        );
        assert_eq!(rx.try_recv().ok(), Some(reaped(pid, 42)));
        drop(window);
        assert!(
            router.routes().unclaimed.is_empty(),
            "the orphans' exits go with it"
        );
    }
}
