//! The system calls the shim makes, in one place, each named for what it is for.
//!
//! Everything else in the shim speaks in intentions ("signal this process", "give the child
//! its terminal") and calls in here. Most wrappers are safe calls into `rustix` (pidfds,
//! signals, terminals, system parameters) or `nix` (identity, limits, sessions); the few
//! `unsafe` blocks left are the ones no safe API covers, each with its reason.
//!
//! Two groups of functions:
//!
//! - the shim's own: pidfds, signals to processes and process groups, the window size of a
//!   terminal, system parameters;
//! - the *child side* ([`child`]): what a freshly forked child does before it `exec`s. Those
//!   run between `fork` and `exec` in a copy of a multi-threaded process, where only
//!   async-signal-safe calls are allowed: no allocation, no lock, nothing but the system
//!   call itself. Every function there is one or two plain system calls on data prepared
//!   before the fork.

use std::{
    io,
    os::fd::{AsFd, OwnedFd, RawFd},
};

use rustix::process::{Pid, PidfdFlags};

/// A signal number checked against the kernel's range (1 to `SIGRTMAX`), ready to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(rustix::process::Signal);

impl Signal {
    /// SIGKILL: cannot be caught, blocked or ignored.
    pub const KILL: Signal = Signal(rustix::process::Signal::KILL);
    /// SIGSTOP: what `Pause` sends (cannot be caught either).
    pub const STOP: Signal = Signal(rustix::process::Signal::STOP);
    /// SIGCONT: what `Resume` sends.
    pub const CONT: Signal = Signal(rustix::process::Signal::CONT);

    /// Checks a number from a `Kill` request; real-time signals are accepted, 0 (kill's
    /// "does it exist?" probe) is not a signal to deliver.
    pub fn new(number: u32) -> Option<Signal> {
        if !(1..=Self::max()).contains(&number) {
            return None;
        }
        // SAFETY: the number is non-zero and within the kernel's signal range. rustix asks
        // that a number libc reserves for itself (glibc's 32 and 33) never be used to block,
        // handle or send signals *within this process*: a `Signal` here is only ever sent
        // to the task's processes, never to the shim, nor used for its own handlers.
        Some(Signal(unsafe {
            rustix::process::Signal::from_raw_unchecked(number as i32)
        }))
    }

    /// The largest signal number the kernel delivers (`SIGRTMAX`).
    pub fn max() -> u32 {
        libc::SIGRTMAX() as u32
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0.as_raw()
    }
}

/// `pidfd_open(2)`: a descriptor that refers to this very process and no other, unlike its
/// pid, which the kernel reuses once the process is reaped.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::NONBLOCK)?)
}

/// `pidfd_send_signal(2)`: fails with `ESRCH` once the process has exited, instead of
/// hitting whichever process reused its pid.
pub fn signal_pidfd(pidfd: impl AsFd, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, signal.0)?)
}

/// `kill(2)` of one process by pid. Only for processes the shim knows are unreaped (its
/// descendants, found in `/proc` just before; see `exits.rs` for why that is safe).
pub fn signal_pid(pid: i32, signal: Signal) -> io::Result<()> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::kill_process(pid, signal.0)?)
}

/// `killpg(2)`: every process of the process group `pgid`.
pub fn signal_group(pgid: i32, signal: Signal) -> io::Result<()> {
    let pgid = Pid::from_raw(pgid).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::kill_process_group(pgid, signal.0)?)
}

/// True while this process has any child, running or exited and not yet reaped: the
/// kernel's own answer, from `waitid(P_ALL, WNOHANG | WNOWAIT)`. `ECHILD` means none.
///
/// This is not a wait in the sense of the reaper rule (docs/ARCHITECTURE.md): `WNOWAIT`
/// leaves every status where it is, for the reaper to collect.
pub fn has_children() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::All, flags), Err(nix::errno::Errno::ECHILD))
}

/// `TIOCSWINSZ`: sets a terminal's window size; the process on it gets `SIGWINCH`.
pub fn set_window_size(terminal: impl AsFd, width: u32, height: u32) -> io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(terminal, size)?)
}

/// Clock ticks per second, the unit of the CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// The page size, the unit of the resident set in `/proc/<pid>/stat`.
pub fn page_size() -> u64 {
    rustix::param::page_size().max(1) as u64
}

/// `ARG_MAX`: how many bytes of arguments and environment one `execve` accepts (a quarter
/// of the stack limit on Linux).
pub fn arg_max() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .map_or(128 * 1024, |n| n.max(0) as usize)
}

/// What a forked child does before `exec`: async-signal-safe calls only (see the module
/// docs). Each returns the error for `pre_exec`, which reports it as the spawn's error.
pub mod child {
    use std::{io, os::fd::BorrowedFd};

    use nix::{
        sys::{
            resource::{setrlimit, Resource},
            stat::{umask, Mode},
        },
        unistd::{setgid, setgroups, setuid, Gid, Uid},
    };

    use super::RawFd;

    /// Puts `fd` at `target` without the close-on-exec flag, so the program `exec`ed next
    /// finds it there (the start gate on fd 3).
    pub fn place_fd(fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: `dup2` and `fcntl` on descriptors of this (forked) process; `target` is
        // free or ours to overwrite, which is what `dup2` is for.
        let rc = unsafe {
            if fd == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Marks every descriptor from `first` up close-on-exec: whatever a parent leaked
    /// (a jobserver pipe, say) does not reach the program. One `close_range(2)`, or
    /// `fcntl` on each descriptor where the kernel (before 5.11) lacks it.
    pub fn close_on_exec_from(first: RawFd) {
        // SAFETY: plain system calls on this process's own descriptor table; marking a
        // descriptor close-on-exec changes nothing until `exec`.
        unsafe {
            let flags = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
            if libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, flags) != 0 {
                for fd in first..4096 {
                    let current = libc::fcntl(fd, libc::F_GETFD);
                    if current >= 0 {
                        libc::fcntl(fd, libc::F_SETFD, current | libc::FD_CLOEXEC);
                    }
                }
            }
        }
    }

    /// `setsid` then `TIOCSCTTY` on stdin: the child leads a new session whose controlling
    /// terminal is the pty it was given, as a login shell does.
    pub fn new_session_on_terminal() -> io::Result<()> {
        nix::unistd::setsid()?;
        // SAFETY: fd 0 is the pty slave the shim handed the child; it stays open for the
        // borrow, which ends with this call.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        Ok(rustix::process::ioctl_tiocsctty(stdin)?)
    }

    /// Makes this process an ordinary OOM victim again: the shim inherits containerd's
    /// `oom_score_adj` of -999, which the task must not.
    pub fn reset_oom_score_adj() {
        use nix::fcntl::{open, OFlag};
        if let Ok(fd) = open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            let _ = nix::unistd::write(&fd, b"0");
        }
    }

    /// `setrlimit(2)`.
    pub fn set_rlimit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
        Ok(setrlimit(resource, soft, hard)?)
    }

    /// `umask(2)`.
    pub fn set_umask(mask: u32) {
        umask(Mode::from_bits_truncate(mask as libc::mode_t));
    }

    /// setgroups, setgid, setuid, in that order: groups can only be changed while still
    /// root, so the user goes last.
    pub fn set_identity(groups: &[Gid], gid: Gid, uid: Uid) -> io::Result<()> {
        setgroups(groups)?;
        setgid(gid)?;
        setuid(uid)?;
        Ok(())
    }

    /// `PR_SET_NO_NEW_PRIVS`: no setuid binary or file capability can raise privileges.
    pub fn no_new_privileges() -> io::Result<()> {
        Ok(nix::sys::prctl::set_no_new_privs()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_checked_against_the_kernel_range() {
        assert_eq!(Signal::new(15).expect("SIGTERM").number(), libc::SIGTERM);
        assert_eq!(Signal::new(9), Some(Signal::KILL));
        assert!(Signal::new(Signal::max()).is_some());
        for bad in [0, Signal::max() + 1, 1000, u32::MAX] {
            assert_eq!(Signal::new(bad), None, "{bad}");
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test waits for its own child
    fn a_child_not_yet_reaped_counts_as_a_child() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(has_children(), "an exited, unreaped child is still a child");
        child.wait().expect("reap");
    }

    #[test]
    fn system_parameters_are_sane() {
        assert!(clock_ticks() >= 100);
        assert!(page_size() >= 4096);
        assert!(arg_max() >= 128 * 1024);
    }
}
