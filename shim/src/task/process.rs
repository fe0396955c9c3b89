//! A process of the task (its init, or an exec): its states and the only ways they change.
//!
//! ```text
//!  Create ──▶ Created ──Start──▶ Running ──exit──▶ Stopped ──Delete──▶ (gone)
//!                │                                    ▲
//!                └──────────── Kill / exit ───────────┘
//! ```
//!
//! How the process was made, and what `Start` does to it, is its process model's business
//! (`model/mod.rs`; the host model's start gate in `model/host/mod.rs`). Here is what every model's
//! processes share: the state machine, the stdio copies, the `Wait`s, and signals through a
//! *pidfd* (`pidfd_open(2)`), a handle on this very process rather than on a number: once
//! the process has exited, `pidfd_send_signal` fails with `ESRCH` instead of hitting
//! whichever process reused the pid.

use std::{os::fd::OwnedFd, sync::Arc, time::SystemTime};

use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    stdio::{Io, StdioPaths},
    sys::{self, Signal},
};

/// How a process ended: the code containerd reports, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit status, or 128 + the signal number when a signal killed the process
    /// (143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL). The reaper computes it from
    /// `waitpid`; see `task/exits.rs`.
    pub code: u32,
    /// When the shim reaped it.
    pub at: SystemTime,
}

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Made, held before its program runs (the host model's start gate): it has a pid.
    Created,
    /// Released by `Start`.
    Running,
    /// Exited and reaped.
    Stopped(ExitStatus),
}

/// A process of the task.
pub struct Process {
    /// Its pid (the init's is also the task's process group id in the host model); 0 for
    /// a process its model makes only at `Start` (an OCI runtime's exec, a restored init).
    pub pid: i32,
    /// A handle on exactly this process, for signals that cannot hit a recycled pid; none
    /// before the process exists, or when it had exited before a handle could be taken.
    pidfd: Option<Arc<OwnedFd>>,
    /// Current state.
    state: State,
    /// The FIFO paths, reported back by `State`.
    pub stdio: StdioPaths,
    /// The stdio copies.
    pub io: Io,
    /// Broadcasts the exit to every `Wait` call.
    exited: watch::Sender<Option<ExitStatus>>,
}

impl Process {
    /// A process its model just made (`pid`, 0 for one made only at `Start`, and its
    /// handle), in the `Created` state, with its stdio copies.
    pub fn new(pid: i32, pidfd: Option<Arc<OwnedFd>>, stdio: StdioPaths, io: Io) -> Process {
        Process {
            pid,
            pidfd,
            state: State::Created,
            stdio,
            io,
            exited: watch::channel(None).0,
        }
    }

    /// Whether the process exists: always, but for one its model makes at `Start` (an OCI
    /// runtime's exec, an init restored from a checkpoint) until then.
    pub fn exists(&self) -> bool {
        self.pid != 0
    }

    /// The process its model made at `Start`, `pid` behind `pidfd`.
    pub fn made(&mut self, pid: i32, pidfd: Option<Arc<OwnedFd>>) {
        self.pid = pid;
        self.pidfd = pidfd;
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once the exit was recorded.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, State::Stopped(_))
    }

    /// True when the process has exited but its exit is not recorded yet: the reaper has
    /// it, or is about to, and the exit policy will record it (see `task/container.rs`).
    pub fn exit_pending(&self) -> bool {
        // Made, with no handle: it had exited before one could be taken.
        !self.is_stopped()
            && self.exists()
            && self.pidfd.as_ref().is_none_or(|p| sys::pidfd_exited(&**p))
    }

    /// `FailedPrecondition` unless the process is `Created`: only then may it start.
    pub fn ensure_created(&self) -> Result<()> {
        match self.state {
            State::Created => Ok(()),
            State::Running => Err(Error::FailedPrecondition(format!(
                "process {} is already running",
                self.pid
            ))),
            State::Stopped(exit) => Err(Error::FailedPrecondition(format!(
                "process {} exited with {} before it was started",
                self.pid, exit.code
            ))),
        }
    }

    /// `Start` let it run its program (its model's part is done).
    pub fn set_running(&mut self) {
        if self.state == State::Created {
            self.state = State::Running;
        }
    }

    /// `NotFound` once the process has exited, recorded or not (whatever the reaper has got
    /// to), as containerd expects of a signal to it.
    pub fn ensure_alive(&self) -> Result<()> {
        if self.is_stopped() || self.exit_pending() {
            return Err(self.gone());
        }
        Ok(())
    }

    fn gone(&self) -> Error {
        Error::NotFound(format!("process {} already finished", self.pid))
    }

    /// Sends `signal` to the process. `NotFound` once it has exited, as containerd expects.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        self.ensure_alive()?;
        if !self.exists() {
            return Err(Error::FailedPrecondition(
                "the process is not started: there is no process to signal yet".into(),
            ));
        }
        let Some(pidfd) = &self.pidfd else {
            return Err(self.gone());
        };
        let gone = || self.gone();
        sys::signal_pidfd(&**pidfd, signal).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => gone(),
            _ => Error::io(format!(
                "signal {} to process {}",
                signal.number(),
                self.pid
            ))(e),
        })
    }

    /// Records the exit reported by the reaper and wakes every `Wait`.
    pub fn set_exited(&mut self, code: u32) -> ExitStatus {
        let exit = ExitStatus {
            code,
            at: SystemTime::now(),
        };
        self.state = State::Stopped(exit);
        self.exited.send_replace(Some(exit));
        exit
    }

    /// A receiver that yields the exit once it happened (`Wait`).
    pub fn subscribe_exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exited.subscribe()
    }
}

/// Validates a signal number from a `Kill` request: 1 to `SIGRTMAX`, real-time signals
/// included. 0 (kill's "does it exist?" probe) is not a signal to deliver.
pub fn validate_signal(signal: u32) -> Result<Signal> {
    Signal::new(signal).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "signal {signal} is out of range (1 to {})",
            Signal::max()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_signals_are_invalid_argument() {
        assert_eq!(
            validate_signal(15).expect("SIGTERM").number(),
            libc::SIGTERM
        );
        for bad in [0, Signal::max() + 1, u32::MAX] {
            assert!(
                matches!(validate_signal(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
