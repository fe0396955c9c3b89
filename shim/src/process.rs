//! A process of the task (its init, or an exec): its states and the only ways they change.
//!
//! ```text
//!  Create ──▶ Created ──Start──▶ Running ──exit──▶ Stopped ──Delete──▶ (gone)
//!                │                                    ▲
//!                └──────────── Kill / exit ───────────┘
//! ```
//!
//! The init process is a child of the shim in its **own process group** (pgid = its pid);
//! exec processes join that group. The Go sample left the task in the shim's group; a group
//! of its own means `kill --all` can signal the whole task with one `killpg` without ever
//! signalling the shim, and a terminal's Ctrl-C aimed at the task cannot reach the shim. A
//! process with a terminal leads a session of its own instead, as a login shell does.
//!
//! Between `fork` and the `exec` of the `init` helper, the child applies the spec: the start
//! gate on fd 3, a new session and controlling terminal if asked, `oom_score_adj` back to 0
//! (containerd runs near -999 and the shim inherits it), rlimits, umask, then setgroups,
//! setgid, setuid (in that order: groups can only be dropped while still root), then
//! `no_new_privs`. See [`ChildSetup`].
//!
//! Signals go through a *pidfd* (`pidfd_open(2)`), a handle on this very process rather than
//! on a number: once the process has exited, `pidfd_send_signal` fails with `ESRCH` instead
//! of hitting whichever process reused the pid.

use std::{
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt,
    },
    process::Command,
    time::SystemTime,
};

use log::info;
use nix::{fcntl::OFlag, unistd::pipe2};
use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    init,
    spec::ProcessSpec,
    stdio::{self, Io, StdioPaths},
};

/// How a process ended: the code containerd reports, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit status, or 128 + the signal number when a signal killed the process
    /// (143 for SIGTERM, 130 for SIGINT, 137 for SIGKILL). The crate's reaper computes it
    /// from `waitpid`; see `exits.rs`.
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

/// Which process group a new process goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A group of its own (the init process).
    Own,
    /// The init's group (exec processes), so `kill --all` reaches them with one `killpg`.
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
    /// Spawns the process in the `Created` state: this binary's `init` helper, with the
    /// spec's environment, working directory and identity, waiting at the gate.
    pub fn spawn(
        process: &ProcessSpec,
        stdio_paths: StdioPaths,
        group: Group,
        name: &str,
    ) -> Result<Self> {
        let mut stdio_paths = stdio_paths;
        stdio_paths.terminal = process.terminal;
        let (child_stdio, pending) = stdio::open(&stdio_paths)?;
        let (gate_read, gate_write) = pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
        let setup = ChildSetup::new(process, gate_read.as_raw_fd());

        // `/proc/self/exe` is this binary even if it was replaced on disk since.
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0(env!("CARGO_BIN_NAME"))
            .arg(init::SUBCOMMAND)
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
        // prepared before the fork (see its docs).
        unsafe {
            command.pre_exec(move || setup.apply());
        }
        // No `Child::wait` ever: the crate's reaper collects every child (see exits.rs).
        // Dropping the `Child` neither waits nor kills.
        let child = command
            .spawn()
            .map_err(Error::io("spawn the init helper"))?;
        let pid = child.id() as i32;
        // Drop our copies of the child's ends now: the output copies see end-of-file only
        // when every writer is closed.
        drop(command);
        drop(gate_read);
        // Nothing between spawn and here awaits, so the reaper (a task on this same
        // single-threaded runtime) cannot have reaped the child: the pid is still ours.
        let pidfd = pidfd_open(pid).map_err(Error::io(format!("pidfd_open({pid})")))?;
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
        nix::unistd::write(&gate, &[init::GO]).map_err(|errno| {
            Error::FailedPrecondition(format!(
                "process {} exited before it could be started: {errno}",
                self.pid
            ))
        })?;
        self.state = State::Running;
        Ok(())
    }

    /// Sends `signal` to the process. `NotFound` once it has exited, as containerd expects.
    pub fn kill(&self, signal: i32) -> Result<()> {
        self.send(signal, false)
    }

    /// Sends `signal` to the process and to every process of its process group (the task's
    /// processes, unless they moved to a group of their own).
    pub fn kill_group(&self, signal: i32) -> Result<()> {
        self.send(signal, true)
    }

    fn send(&self, signal: i32, group: bool) -> Result<()> {
        if let State::Stopped(_) = self.state {
            return Err(Error::NotFound(format!(
                "process {} already finished",
                self.pid
            )));
        }
        pidfd_send_signal(&self.pidfd, signal).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => Error::NotFound(format!("process {} already finished", self.pid)),
            _ => Error::io(format!("signal {signal} to process {}", self.pid))(e),
        })?;
        if group {
            // Safe from pid reuse: the group leader is alive (the pidfd signal above
            // succeeded and the shim has not reaped it), so the group id is still its own.
            // SAFETY: a plain system call.
            unsafe { libc::killpg(self.pid, signal) };
        }
        Ok(())
    }

    /// `Delete` of a process that was never started: kills the helper at its gate, then
    /// closes the gate, so that a `Start` racing this `Delete` finds no gate to open
    /// (the pending SIGKILL wins over the end-of-file the helper would read).
    pub fn cancel_start(&mut self) -> Result<()> {
        self.kill(libc::SIGKILL)?;
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
    /// Resource limits to set.
    rlimits: Vec<(i32, libc::rlimit)>,
    /// The umask.
    umask: libc::mode_t,
    /// Supplementary groups, group, user.
    groups: Vec<libc::gid_t>,
    gid: libc::gid_t,
    uid: libc::uid_t,
    /// `PR_SET_NO_NEW_PRIVS`.
    no_new_privileges: bool,
}

impl ChildSetup {
    fn new(process: &ProcessSpec, gate: RawFd) -> ChildSetup {
        ChildSetup {
            gate,
            session: process.terminal,
            rlimits: process
                .rlimits
                .iter()
                .map(|&(resource, soft, hard)| {
                    (
                        resource,
                        libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        },
                    )
                })
                .collect(),
            umask: process.identity.umask as libc::mode_t,
            groups: process.identity.groups.clone(),
            gid: process.identity.gid,
            uid: process.identity.uid,
            no_new_privileges: process.no_new_privileges,
        }
    }

    /// Runs in the forked child. Every call is a plain, async-signal-safe system call; the
    /// only data touched was allocated before the fork.
    fn apply(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        init::install_gate(self.gate)?;
        // Descriptors the shim inherited without close-on-exec (a parent's leak, e.g. a
        // jobserver pipe) must not reach the task: it starts with 0, 1, 2 and the gate only.
        crate::init::cloexec_from(init::GATE_FD + 1);
        // SAFETY (all blocks below): system calls with valid arguments, in the child only.
        if self.session {
            check(unsafe { libc::setsid() })?;
            check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })?;
        }
        // Back to the default: the shim inherits containerd's -999, the task must not.
        let oom_path = c"/proc/self/oom_score_adj";
        let fd = unsafe { libc::open(oom_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            unsafe {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        for (resource, limit) in &self.rlimits {
            check(unsafe { libc::setrlimit(*resource as _, limit) })?;
        }
        unsafe { libc::umask(self.umask) };
        check(unsafe { libc::setgroups(self.groups.len(), self.groups.as_ptr()) })?;
        check(unsafe { libc::setgid(self.gid) })?;
        check(unsafe { libc::setuid(self.uid) })?;
        if self.no_new_privileges {
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        }
        Ok(())
    }
}

/// `pidfd_open(2)`: a descriptor that refers to this process and no other.
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call; on success the kernel returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`.
fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call on a descriptor we own; no siginfo is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Validates a signal number from a `Kill` request: 1 to `SIGRTMAX`, real-time signals
/// included. 0 (kill's "does it exist?" probe) is not a signal to deliver.
pub fn validate_signal(signal: u32) -> Result<i32> {
    let max = libc::SIGRTMAX() as u32;
    if (1..=max).contains(&signal) {
        Ok(signal as i32)
    } else {
        Err(Error::InvalidArgument(format!(
            "signal {signal} is out of range (1 to {max})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_checked_against_the_kernel_range() {
        assert_eq!(validate_signal(15).expect("SIGTERM"), libc::SIGTERM);
        assert_eq!(validate_signal(9).expect("SIGKILL"), libc::SIGKILL);
        assert!(validate_signal(libc::SIGRTMAX() as u32).is_ok());
        for bad in [0, libc::SIGRTMAX() as u32 + 1, 1000, u32::MAX] {
            assert!(
                matches!(validate_signal(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
