//! A process of the task (its init, or an exec): its states and the only ways they change.
//!
//! ```text
//!  Create ──▶ Created ──Start──▶ Running ──exit──▶ Stopped ──Delete──▶ (gone)
//!                │                                    ▲
//!                └──────────── Kill / exit ───────────┘
//! ```
//!
//! The init process is a child of the shim in its **own process group** (pgid = its pid), so
//! `kill --all` can signal the whole task with one `killpg` without ever signalling the shim,
//! and a terminal's Ctrl-C aimed at the task cannot reach the shim. An exec process joins
//! that group when it can ([`Group::Join`]). A process with a terminal leads a session of its
//! own instead, as a login shell does; a group in another session cannot be joined, so the
//! execs of a terminal task get a group of their own ([`Group::Own`]) and `kill --all`
//! reaches them as the container's processes (`members.rs`).
//!
//! Between `fork` and the `exec` of the start-gate helper (`gate.rs`), the child applies the
//! spec: the start gate on fd 3, a new session and controlling terminal if asked,
//! `oom_score_adj` back to 0, rlimits, umask, then setgroups, setgid, setuid, then
//! `no_new_privs`. See `ChildSetup`.
//!
//! Signals go through a *pidfd* (`pidfd_open(2)`), a handle on this very process rather than
//! on a number: once the process has exited, `pidfd_send_signal` fails with `ESRCH` instead
//! of hitting whichever process reused the pid.

use std::{
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    path::Path,
    process::Command,
    time::SystemTime,
};

use log::info;
use nix::{
    fcntl::OFlag,
    sys::resource::Resource,
    unistd::{pipe2, Gid, Uid},
};
use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    gate,
    logs::LogContext,
    spec::ProcessSpec,
    stdio::{self, Io, StdioPaths},
    sys::{self, Signal},
};

/// How a process ended: the code containerd reports, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit status, or 128 + the signal number when a signal killed the process
    /// (143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL). The reaper computes it from
    /// `waitpid`; see `exits.rs`.
    pub code: u32,
    /// When the shim reaped it.
    pub at: SystemTime,
}

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spawned, waiting at the start gate: it has a pid but has not run its program.
    Created,
    /// Released by `Start`.
    Running,
    /// Exited and reaped.
    Stopped(ExitStatus),
}

/// Which process group a new process goes into (ignored for a process with a terminal,
/// which leads a session, and so a group, of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A group of its own (the init process; the execs of a terminal task).
    Own,
    /// An existing group in the shim's session (the init's, for exec processes), so that
    /// `kill --all` reaches them with one `killpg`.
    Join(i32),
}

/// A process of the task.
pub struct Process {
    /// Its pid (the init's is also the task's process group id).
    pub pid: i32,
    /// A handle on exactly this process, for signals that cannot hit a recycled pid.
    pidfd: OwnedFd,
    /// Write end of the start gate while `Created`; `Start` writes to it, dropping it
    /// without a write makes the helper exit unstarted.
    gate: Option<OwnedFd>,
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
    /// Spawns the process in the `Created` state: the start-gate helper `helper` (this very
    /// binary, `/proc/self/exe`, in the shim), with the spec's environment, working
    /// directory and identity, waiting at the gate.
    pub fn spawn(
        helper: &Path,
        process: &ProcessSpec,
        stdio_paths: StdioPaths,
        group: Group,
        name: &str,
        log: &LogContext,
    ) -> Result<Self> {
        let program = process.program.to_string_lossy();
        let arg0 = "containerd-shim-sample-v2";
        process.check_exec_size(&[arg0, gate::SUBCOMMAND, &program], sys::arg_max())?;
        let mut stdio_paths = stdio_paths;
        stdio_paths.terminal = process.terminal;
        let (child_stdio, pending) = stdio::open(&stdio_paths, log)?;
        let (gate_read, gate_write) = pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
        let setup = ChildSetup::new(process, gate_read.as_raw_fd());

        let mut command = Command::new(helper);
        command
            .arg0(arg0)
            .arg(gate::SUBCOMMAND)
            .arg(&process.program)
            .args(&process.args)
            .env_clear()
            .envs(process.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&process.cwd)
            .stdin(child_stdio.stdin)
            .stdout(child_stdio.stdout)
            .stderr(child_stdio.stderr);
        if !process.terminal {
            command.process_group(match group {
                Group::Own => 0,
                Group::Join(pgid) => pgid,
            });
        }
        // SAFETY: `ChildSetup::apply` only makes async-signal-safe system calls on data
        // prepared before the fork (see `sys::child`).
        unsafe {
            command.pre_exec(move || setup.apply());
        }
        // No `Child::wait` ever: the reaper collects every child (see exits.rs). Dropping
        // the `Child` neither waits nor kills.
        let child = command.spawn().map_err(|err| match err.raw_os_error() {
            // The pre-check above makes this rare (the limit can shrink in between).
            Some(libc::E2BIG) => Error::InvalidArgument(format!(
                "spawn {name}: the arguments and environment exceed what one execve accepts \
                 (ARG_MAX {} bytes): {err}",
                sys::arg_max()
            )),
            _ => Error::io(format!("spawn the start-gate helper for {name}"))(err),
        })?;
        let pid = child.id() as i32;
        // Drop our copies of the child's ends now: the output copies see end-of-file only
        // when every writer is closed.
        drop(command);
        drop(gate_read);
        // Nothing between spawn and here awaits, so the reaper (a task on this same
        // single-threaded runtime) cannot have reaped the child: the pid is still ours.
        let pidfd = sys::pidfd_open(pid).map_err(Error::io(format!("pidfd_open({pid})")))?;
        let io = pending.start(name);
        info!("{name}: created process {pid}, waiting for Start");
        Ok(Process {
            pid,
            pidfd,
            gate: Some(gate_write),
            state: State::Created,
            stdio: stdio_paths,
            io,
            exited: watch::channel(None).0,
        })
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
    /// it, or is about to, and the exit policy will record it (see `service.rs`).
    pub fn exit_pending(&self) -> bool {
        !self.is_stopped() && sys::pidfd_exited(&self.pidfd)
    }

    /// `Start`: opens the gate so the helper `exec`s the program.
    pub fn start(&mut self) -> Result<()> {
        match self.state {
            State::Created => {}
            State::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "process {} is already running",
                    self.pid
                )))
            }
            State::Stopped(exit) => {
                return Err(Error::FailedPrecondition(format!(
                    "process {} exited with {} before it was started",
                    self.pid, exit.code
                )))
            }
        }
        let gate = self.gate.take().ok_or_else(|| {
            Error::FailedPrecondition(format!("process {} has no start gate", self.pid))
        })?;
        // A one-byte write into an empty pipe never blocks. EPIPE means the helper is gone;
        // its exit is on its way through the reaper.
        nix::unistd::write(&gate, &[gate::GO]).map_err(|errno| {
            Error::FailedPrecondition(format!(
                "process {} exited before it could be started: {errno}",
                self.pid
            ))
        })?;
        self.state = State::Running;
        Ok(())
    }

    /// Sends `signal` to the process. `NotFound` once it has exited, as containerd expects.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        self.send(signal, false)
    }

    /// Sends `signal` to the process and to every process of its process group (the task's
    /// processes, unless they moved to a group of their own).
    pub fn kill_group(&self, signal: Signal) -> Result<()> {
        self.send(signal, true)
    }

    fn send(&self, signal: Signal, group: bool) -> Result<()> {
        let gone = || Error::NotFound(format!("process {} already finished", self.pid));
        // Exited, recorded or not: nothing to signal, whatever the reaper has got to.
        if self.is_stopped() || self.exit_pending() {
            return Err(gone());
        }
        sys::signal_pidfd(&self.pidfd, signal).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => gone(),
            _ => Error::io(format!(
                "signal {} to process {}",
                signal.number(),
                self.pid
            ))(e),
        })?;
        if group {
            // Safe from pid reuse: the group leader is alive (the pidfd signal above
            // succeeded and the shim has not reaped it), so the group id is still its own.
            let _ = sys::signal_group(self.pid, signal);
        }
        Ok(())
    }

    /// `Delete` of a process that was never started: kills the helper at its gate, then
    /// closes the gate, so that a `Start` racing this `Delete` finds no gate to open
    /// (the pending SIGKILL wins over the end-of-file the helper would read).
    pub fn cancel_start(&mut self) -> Result<()> {
        match self.kill(Signal::KILL) {
            // Already gone: its exit is recorded, or on its way.
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
        self.gate = None;
        Ok(())
    }

    /// Records the exit reported by the reaper and wakes every `Wait`.
    pub fn set_exited(&mut self, code: u32) -> ExitStatus {
        let exit = ExitStatus {
            code,
            at: SystemTime::now(),
        };
        self.state = State::Stopped(exit);
        self.gate = None;
        self.exited.send_replace(Some(exit));
        exit
    }

    /// A receiver that yields the exit once it happened (`Wait`).
    pub fn subscribe_exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exited.subscribe()
    }
}

/// What the child does between `fork` and the `exec` of the helper, prepared beforehand
/// so that [`ChildSetup::apply`] allocates nothing.
struct ChildSetup {
    /// The start gate's read end, moved to fd 3.
    gate: RawFd,
    /// Start a new session with the terminal (stdin) as controlling terminal.
    session: bool,
    /// Resource limits to set: (resource, soft, hard).
    rlimits: Vec<(Resource, u64, u64)>,
    /// The umask.
    umask: u32,
    /// Supplementary groups.
    groups: Vec<Gid>,
    /// The group id.
    gid: Gid,
    /// The user id.
    uid: Uid,
    /// `PR_SET_NO_NEW_PRIVS`.
    no_new_privileges: bool,
}

impl ChildSetup {
    fn new(process: &ProcessSpec, gate: RawFd) -> ChildSetup {
        let identity = &process.identity;
        ChildSetup {
            gate,
            session: process.terminal,
            rlimits: process.rlimits.clone(),
            umask: identity.umask,
            groups: identity.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
            gid: Gid::from_raw(identity.gid),
            uid: Uid::from_raw(identity.uid),
            no_new_privileges: process.no_new_privileges,
        }
    }

    /// Runs in the forked child: async-signal-safe system calls only (`sys::child`), on
    /// data allocated before the fork.
    fn apply(&self) -> std::io::Result<()> {
        use sys::child;
        child::place_fd(self.gate, gate::GATE_FD)?;
        // Descriptors the shim inherited without close-on-exec must not reach the process:
        // it starts with 0, 1, 2 and the gate only.
        child::close_on_exec_from(gate::GATE_FD + 1);
        if self.session {
            child::new_session_on_terminal()?;
        }
        child::reset_oom_score_adj();
        for &(resource, soft, hard) in &self.rlimits {
            child::set_rlimit(resource, soft, hard)?;
        }
        child::set_umask(self.umask);
        child::set_identity(&self.groups, self.gid, self.uid)?;
        if self.no_new_privileges {
            child::no_new_privileges()?;
        }
        Ok(())
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
