//! The `init` helper: how a task exists in the *created* state before `Start`.
//!
//! containerd splits running a task into `Create` (the process exists, has a pid, has not run
//! its command) and `Start` (the command runs). runc does it with `runc init` blocked on an
//! exec FIFO; this shim does the same with itself. `Create` spawns this very binary as
//!
//! ```text
//! containerd-shim-sample-v2 init <program path> <argv0> <args...>
//! ```
//!
//! with the read end of a pipe, the *start gate*, on fd 3. The helper is a fresh,
//! single-threaded process, so it may block and then `exec` safely. It waits on the gate:
//! `Start` writes one byte and the helper `exec`s the program, keeping its pid, its process
//! group and its stdio. If the gate is closed with nothing written (the task was deleted
//! before `Start`, or the shim died), the helper exits without running anything.

use std::{
    ffi::OsString,
    fs::File,
    io::{Read, Write},
    os::{
        fd::{FromRawFd, RawFd},
        unix::process::CommandExt,
    },
    process::Command,
};

/// The first argument that selects the helper instead of the shim.
pub const SUBCOMMAND: &str = "init";

/// Where the helper finds the start gate.
pub const GATE_FD: RawFd = 3;

/// The byte `Start` writes into the gate.
pub const GO: u8 = b's';

/// Exit code of a helper whose gate closed without a `Start`: nothing was run.
const EXIT_NOT_STARTED: i32 = 125;

/// True when this process was spawned as the `init` helper.
pub fn requested(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == SUBCOMMAND)
}

/// Runs in the child between `fork` and `exec` of the helper (see
/// [`std::os::unix::process::CommandExt::pre_exec`]): puts the gate on fd 3 without the
/// close-on-exec flag. Only `dup2` and `fcntl` are called, both async-signal-safe.
pub fn install_gate(gate: RawFd) -> std::io::Result<()> {
    // SAFETY: plain system calls on descriptors owned by this (forked) process.
    let rc = unsafe {
        if gate == GATE_FD {
            libc::fcntl(GATE_FD, libc::F_SETFD, 0)
        } else {
            libc::dup2(gate, GATE_FD)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec. Async-signal-safe: one
/// `close_range(2)` call, or `fcntl` on each descriptor where the kernel lacks it.
pub fn cloexec_from(first: RawFd) {
    // SAFETY: plain system calls on this process's own descriptor table.
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

/// The helper's whole life: wait at the gate, then become the task's program.
pub fn run(args: Vec<OsString>) -> ! {
    let [_, _, program, argv0, rest @ ..] = args.as_slice() else {
        fail(
            2,
            "usage: containerd-shim-sample-v2 init <program> <argv0> [args...]",
        )
    };
    // SAFETY: fd 3 is not otherwise used by this process: the shim put the gate there
    // (`install_gate`) and nothing in this short-lived process opens files before this point.
    // If someone runs `init` by hand without it, `fcntl` tells us before we take ownership.
    if unsafe { libc::fcntl(GATE_FD, libc::F_GETFD) } < 0 {
        fail(
            2,
            "init must be started by the shim, with the start gate on fd 3",
        )
    }
    let mut gate = unsafe { File::from_raw_fd(GATE_FD) };
    let mut byte = [0u8; 1];
    match gate.read(&mut byte) {
        Ok(1) if byte[0] == GO => {}
        _ => std::process::exit(EXIT_NOT_STARTED),
    }
    // Closing the gate here means the program never sees fd 3: it starts with 0, 1, 2 only.
    drop(gate);
    // `exec` only returns on failure. It also resets SIGPIPE to its default, which the Rust
    // runtime had set to "ignore" in this helper.
    let err = Command::new(program).arg0(argv0).args(rest).exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(
        code,
        &format!("exec {}: {err}", std::path::Path::new(program).display()),
    )
}

/// Reports on the task's own stderr (so `ctr` shows it) and exits.
fn fail(code: i32, message: &str) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "containerd-shim-sample-v2 init: {message}"
    );
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_argument_selects_the_helper() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(requested(&args(&["shim", "init", "/bin/sh", "sh"])));
        assert!(!requested(&args(&["shim", "-id", "init", "start"])));
        assert!(!requested(&args(&["shim"])));
    }
}
