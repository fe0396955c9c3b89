//! The start-gate helper: how a process exists in the *created* state before `Start`.
//!
//! containerd splits running a process into `Create` (the process exists, has a pid, has not
//! run its command) and `Start` (the command runs). runc does it with `runc init` blocked on
//! an exec FIFO; this shim does the same with itself. `Create` (and `Exec`) spawn this very
//! binary as
//!
//! ```text
//! containerd-shim-sample-v2 start-gate <program path> <argv0> <args...>
//! ```
//!
//! with the read end of a pipe, the *start gate*, on fd 3. The helper is a fresh,
//! single-threaded process, so it may block and then `exec` safely. It waits on the gate:
//! `Start` writes one byte and the helper `exec`s the program, keeping its pid, its process
//! group and its stdio. If the gate is closed with nothing written (the process was deleted
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
pub const SUBCOMMAND: &str = "start-gate";

/// Where the helper finds the start gate.
pub const GATE_FD: RawFd = 3;

/// The byte `Start` writes into the gate.
pub const GO: u8 = b's';

/// Exit code of a helper whose gate closed without a `Start`: nothing was run.
const EXIT_NOT_STARTED: i32 = 125;

/// True when this process was spawned as the start-gate helper.
pub fn requested(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == SUBCOMMAND)
}

/// The helper's whole life: wait at the gate, then become the process's program.
pub fn run(args: Vec<OsString>) -> ! {
    let [_, _, program, argv0, rest @ ..] = args.as_slice() else {
        fail(
            2,
            "usage: containerd-shim-sample-v2 start-gate <program> <argv0> [args...]",
        )
    };
    // Someone running the helper by hand has no gate: say so rather than read a stranger.
    if nix::fcntl::fcntl(
        // SAFETY: only borrowed for this one `fcntl`, which tells whether fd 3 is open.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(GATE_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        fail(
            2,
            "start-gate must be started by the shim, with the gate on fd 3",
        )
    }
    // SAFETY: fd 3 is open (checked above) and nothing else in this short-lived process
    // uses it: the shim put the gate there for us (`sys::child::place_fd`).
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

/// Reports on the process's own stderr (so `ctr` shows it) and exits.
fn fail(code: i32, message: &str) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "containerd-shim-sample-v2 start-gate: {message}"
    );
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_argument_selects_the_helper() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(requested(&args(&["shim", "start-gate", "/bin/sh", "sh"])));
        assert!(!requested(&args(&["shim", "-id", "start-gate", "start"])));
        assert!(!requested(&args(&["shim"])));
    }
}
