//! The pause process: what a pod's sandbox runs.
//!
//! Kubernetes starts every pod with a *sandbox* container before the pod's own containers.
//! Under runc it runs the `pause` image, whose process holds the pod's namespaces open and
//! otherwise sleeps. This shim has no namespaces to hold, but containerd's CRI plugin still
//! wants the sandbox to be a running task with a real pid for as long as the pod lives, so
//! for a container with `io.kubernetes.cri.container-type: sandbox` (`task/spec.rs`) the shim
//! runs this binary again as
//!
//! ```text
//! containerd-shim-sample-v2 pause
//! ```
//!
//! through the start gate like any process, with the spec's environment, working directory
//! and user. It ignores the spec's command (the image's `/pause` is not on the host) and
//! does nothing until a signal ends it, with the usual exit codes: 143 after SIGTERM, 137
//! after SIGKILL. Its name in `ps` is `pause`.

use std::ffi::OsString;

/// The first argument that selects the pause process.
pub const SUBCOMMAND: &str = "pause";

/// Its `argv[0]`.
pub const ARGV0: &str = "containerd-shim-sample-v2";

/// True when this process was started as the pause process.
pub fn requested(args: &[OsString]) -> bool {
    args.len() == 2 && args[1] == SUBCOMMAND
}

/// Waits for a signal, forever: every signal the pause process may receive either ends it
/// (the default action of SIGTERM, SIGINT, SIGKILL, ...) or is ignored.
pub fn run() -> ! {
    // `exe` otherwise (the shim runs it as /proc/self/exe): `ps -C pause` finds it.
    let _ = nix::sys::prctl::set_name(c"pause");
    loop {
        nix::unistd::pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_command_line_selects_the_pause_process() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(requested(&args(&[ARGV0, "pause"])));
        assert!(!requested(&args(&[ARGV0, "-id", "pause", "start"])));
        assert!(!requested(&args(&[ARGV0])));
    }
}
