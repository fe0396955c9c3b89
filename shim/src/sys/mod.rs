//! The system calls that need care, each named for what it is for: signals and pidfds,
//! children, terminals, what a forked child does before `exec`.
//!
//! The rest of the shim speaks in intentions ("signal this process", "give the child its
//! terminal") and calls in here; plain calls with safe, obvious wrappers (`pipe2`, `write`,
//! `openpty`) stay where they are used. Most wrappers here are safe calls into `rustix` or
//! `nix`; the `unsafe` blocks left are the ones no safe API covers, each with its reason.
//! The others sit where they must: the two `pre_exec` calls (`stdio/logs.rs`, `task/shim.rs`), the
//! host model's own `clone3` (`model/host/spawn.rs`) and the start-gate helper taking its fd 3
//! (`model/host/gate.rs`).
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

pub mod procfs;

use std::{
    io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
};

use nix::poll::PollFlags;
use rustix::process::{Pid, PidfdFlags};

/// A signal number checked against the kernel's range (1 to `SIGRTMAX`), ready to send.
///
/// Any number in that range may be sent to another process, real-time signals included,
/// so the signals are sent with plain `libc` calls: rustix's `Signal` may not carry the
/// numbers glibc reserves for itself (32 to `SIGRTMAX`) into a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(i32);

impl Signal {
    /// SIGKILL: cannot be caught, blocked or ignored.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// SIGSTOP: what `Pause` sends (cannot be caught either).
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    /// SIGCONT: what `Resume` sends.
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// SIGTERM: how a logger is asked to finish (`stdio/logs.rs`).
    pub const TERM: Signal = Signal(libc::SIGTERM);

    /// Checks a number from a `Kill` request; real-time signals are accepted, 0 (kill's
    /// "does it exist?" probe) is not a signal to deliver.
    pub fn new(number: u32) -> Option<Signal> {
        (1..=Self::max())
            .contains(&number)
            .then_some(Signal(number as i32))
    }

    /// The largest signal number the kernel delivers (`SIGRTMAX`).
    pub fn max() -> u32 {
        libc::SIGRTMAX() as u32
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

/// A pid to signal or open: never 0 or negative, which `kill(2)` reads as "my process
/// group" or "every process I may signal".
fn positive(pid: i32) -> io::Result<i32> {
    if pid > 0 {
        Ok(pid)
    } else {
        Err(io::Error::from_raw_os_error(libc::ESRCH))
    }
}

/// What a signalling call returned, as a `Result`.
fn checked(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_open(2)`: a descriptor that refers to this very process and no other, unlike its
/// pid, which the kernel reuses once the process is reaped.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(positive(pid)?)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::NONBLOCK)?)
}

/// True once the process behind `pidfd` has exited, reaped or not: a pidfd polls readable
/// from that moment on.
pub fn pidfd_exited(pidfd: impl AsFd) -> bool {
    let [ready] = poll_now([(pidfd.as_fd(), PollFlags::POLLIN)]);
    ready
}

/// Whether a pipe's write end `end` still has a reader: with none left, it polls an error.
pub fn has_reader(end: impl AsFd) -> bool {
    let [gone] = poll_now([(end.as_fd(), PollFlags::POLLERR)]);
    !gone
}

/// Opens again the file `fd` is open on, with `flags` (`O_RDONLY`, `O_WRONLY`, ...;
/// close-on-exec always), through `/proc/self/fd`: for a FIFO, another end of the very
/// same FIFO, whatever its path names now.
pub fn reopen(fd: impl AsFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    let file = std::fs::OpenOptions::new()
        .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
        .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(path)?;
    Ok(file.into())
}

/// Waits until the process behind `pidfd` has exited.
pub async fn exited(pidfd: OwnedFd) {
    match on_reactor(pidfd) {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        // Cannot happen for a pidfd; should it, look again in a moment.
        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
    }
}

/// The one `poll(2)` helper: for each descriptor, whether any of the `wanted` events (or an
/// error or hang-up, which poll reports unasked) holds right now. Never blocks; a failed
/// poll answers `true` everywhere, so that callers go on and see the error themselves.
fn poll_now<const N: usize>(fds: [(BorrowedFd<'_>, PollFlags); N]) -> [bool; N] {
    use nix::poll::{poll, PollFd, PollTimeout};
    let mut polled = fds.map(|(fd, wanted)| PollFd::new(fd, wanted));
    if poll(&mut polled, PollTimeout::ZERO).is_err() {
        return [true; N];
    }
    std::array::from_fn(|i| {
        let wanted = fds[i].1 | PollFlags::POLLHUP | PollFlags::POLLERR;
        polled[i].revents().is_some_and(|r| r.intersects(wanted))
    })
}

/// `fd` on the tokio runtime's reactor, to `.await` its readiness (a pidfd's exit, a pipe's
/// data, an eventfd's count).
pub fn on_reactor(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    on_reactor_with(fd, tokio::io::Interest::READABLE)
}

/// [`on_reactor`] for both directions: a terminal's master, read and written by its copies.
pub fn on_reactor_both_ways(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    on_reactor_with(
        fd,
        tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
    )
}

fn on_reactor_with(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use tokio::io::unix::AsyncFd;
    // SAFETY: an `OwnedFd` is open and stays the same descriptor until the `AsyncFd`, which
    // owns it, drops it: what `register_with_interest` asks of its caller.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// `splice(2)` from pipe `from` into pipe `to`, without blocking: moves up to `len` bytes
/// from one pipe's buffer to the other's as page references, never through user space.
/// `Ok(0)` is end-of-file (no writer left on `from`); `WouldBlock`, that `from` is empty or
/// `to` is full.
pub fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    Ok(rustix::pipe::splice(
        from.as_fd(),
        None,
        to.as_fd(),
        None,
        len,
        SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
    )?)
}

/// Whether `input` has something to read (or is at end-of-file) and `output` has room,
/// right now.
pub fn ready_now(input: impl AsFd, output: impl AsFd) -> (bool, bool) {
    let [readable, writable] = poll_now([
        (input.as_fd(), PollFlags::POLLIN),
        (output.as_fd(), PollFlags::POLLOUT),
    ]);
    (readable, writable)
}

/// `pidfd_send_signal(2)`: fails with `ESRCH` once the process has been reaped, instead of
/// hitting whichever process reused its pid.
pub fn signal_pidfd(pidfd: impl AsFd, signal: Signal) -> io::Result<()> {
    let fd = pidfd.as_fd().as_raw_fd();
    // SAFETY: a plain system call on a descriptor borrowed for its duration; no siginfo.
    checked(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal.0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
}

/// `kill(2)` of one process by pid. Only for processes the shim knows are unreaped (its
/// descendants, found in `/proc` just before; see `task/exits.rs` for why that is safe).
pub fn signal_pid(pid: i32, signal: Signal) -> io::Result<()> {
    let pid = positive(pid)?;
    // SAFETY: a plain system call with a positive pid: one process, never a broadcast.
    checked(unsafe { libc::kill(pid, signal.0) }.into())
}

/// `killpg(2)`: every process of the process group `pgid`.
pub fn signal_group(pgid: i32, signal: Signal) -> io::Result<()> {
    let pgid = positive(pgid)?;
    // SAFETY: a plain system call with a positive group id.
    checked(unsafe { libc::killpg(pgid, signal.0) }.into())
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
        unistd::{Gid, Uid},
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

    /// Puts `fds` at 3, 4, 5, ... without the close-on-exec flag (a logger's stdout, stderr
    /// and ready pipe). Each is first copied above 9, so that placing one never overwrites
    /// another that happens to sit at a target number.
    pub fn place_fds(fds: &[RawFd]) -> io::Result<()> {
        let mut high = [0 as RawFd; 8];
        for (copy, &fd) in high.iter_mut().zip(fds) {
            // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` on a descriptor of this (forked) process.
            *copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if *copy < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (i, &copy) in high.iter().take(fds.len()).enumerate() {
            place_fd(copy, 3 + i as RawFd)?;
        }
        Ok(())
    }

    /// Marks every descriptor from `first` up close-on-exec: whatever a parent leaked
    /// (a jobserver pipe, say) does not reach the program. One `close_range(2)`; where the
    /// kernel lacks it (before 5.11), `fcntl` on each descriptor up to 4095.
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

    /// `setsid`: a new session (and process group) led by this process, with no
    /// controlling terminal.
    pub fn new_session() -> io::Result<()> {
        nix::unistd::setsid()?;
        Ok(())
    }

    /// `setsid` then `TIOCSCTTY` on stdin: the child leads a new session whose controlling
    /// terminal is the pty it was given, as a login shell does.
    pub fn new_session_on_terminal() -> io::Result<()> {
        new_session()?;
        // SAFETY: fd 0 is the pty slave the shim handed the child; it stays open for the
        // borrow, which ends with this call.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        Ok(rustix::process::ioctl_tiocsctty(stdin)?)
    }

    /// Writes `value` into `/proc/self/oom_score_adj`: how readily the kernel's OOM killer
    /// picks this process. Raising it is always allowed; lowering it below the current
    /// value needs `CAP_SYS_RESOURCE` (`EACCES` otherwise).
    pub fn set_oom_score_adj(value: i32) -> io::Result<()> {
        use nix::fcntl::{open, OFlag};
        // Formatted by hand into a stack buffer: no allocation after `fork`.
        let mut digits = [0u8; 12];
        let mut at = digits.len();
        let mut rest = value.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if value < 0 {
            at -= 1;
            digits[at] = b'-';
        }
        let fd = open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        nix::unistd::write(&fd, &digits[at..])?;
        Ok(())
    }

    /// `setrlimit(2)`.
    pub fn set_rlimit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
        Ok(setrlimit(resource, soft, hard)?)
    }

    /// `PR_SET_PDEATHSIG` with SIGKILL: the child dies with the thread that spawned it, so a
    /// runtime command never outlives a shim that crashed while waiting for it.
    pub fn die_with_parent() -> io::Result<()> {
        // SAFETY: prctl is async-signal-safe; the arguments are plain integers.
        let done = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `umask(2)`.
    pub fn set_umask(mask: u32) {
        umask(Mode::from_bits_truncate(mask as libc::mode_t));
    }

    /// setgroups, setgid, setuid, in that order: groups can only be changed while still
    /// root, so the user goes last.
    ///
    /// The raw system calls, not glibc's wrappers: those change every thread of the process
    /// (`__nptl_setxid`, signalling each and taking a lock), and a child made by a raw
    /// `clone3` (`model/host/spawn.rs`) inherits glibc's list of the parent's threads. The child has
    /// one thread, which is all the raw calls change.
    pub fn set_identity(groups: &[Gid], gid: Gid, uid: Uid) -> io::Result<()> {
        // SAFETY: plain system calls; `groups` is a live slice of `gid_t`s (a `Gid` is one).
        unsafe {
            raw(libc::syscall(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr().cast::<libc::gid_t>(),
            ))?;
            raw(libc::syscall(libc::SYS_setgid, gid.as_raw()))?;
            raw(libc::syscall(libc::SYS_setuid, uid.as_raw()))?;
        }
        Ok(())
    }

    /// A raw system call's result.
    fn raw(rc: libc::c_long) -> io::Result<()> {
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unblocks every signal and gives SIGPIPE back its default action (the Rust runtime
    /// ignores it in the shim), as `std::process::Command` does for its children.
    pub fn reset_signals() {
        // SAFETY: plain system calls on this process's own signal state, with a mask and
        // action made on the stack.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }

    /// Puts `fds` at 0, 1 and 2 without the close-on-exec flag. Each is first copied above
    /// 9, so that placing one never overwrites another that sits at a target number.
    pub fn place_stdio(fds: [RawFd; 3]) -> io::Result<()> {
        let mut high = [0 as RawFd; 3];
        for (copy, fd) in high.iter_mut().zip(fds) {
            // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` on a descriptor of this (forked) process.
            *copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if *copy < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (target, copy) in high.into_iter().enumerate() {
            place_fd(copy, target as RawFd)?;
        }
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
    fn no_pid_below_1_is_ever_signalled() {
        for pid in [0, -1, i32::MIN] {
            let err = signal_pid(pid, Signal::CONT).expect_err("refused");
            assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{pid}");
            assert!(signal_group(pid, Signal::CONT).is_err(), "{pid}");
            assert!(pidfd_open(pid).is_err(), "{pid}");
        }
    }

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
