//! An OCI runtime's command line (runc, crun, runsc): what the OCI mode (`model/oci/mod.rs`) runs.
//!
//! Every command is `BINARY --root ROOT --log LOG --log-format json [--systemd-cgroup]
//! [--criu PATH] SUBCOMMAND ...`, as containerd's runc shim runs it: under a deadline (the
//! request's, or [`DEFAULT_DEADLINE`]) past which it is killed and the call fails with
//! `DeadlineExceeded`, and with a parent-death signal, so that it never outlives the shim. The runtime is the shim's child like any other, and the
//! shim's one reaper collects it (`task/exits.rs`): [`Runtime::run`] spawns it and waits for its
//! exit through the router, never with `Child::wait`, which would race the reaper.
//! rust-extensions' `runc` crate could do the same today: its client has `exec`, a console
//! socket and a `Spawner` hook through which a shim runs each command its own way (here:
//! awaited through this shim's reaper). This runner stays because it is small, shows every
//! flag it passes, and needs no second process-handling layer to read.
//!
//! A runtime that fails says why in its log, one JSON object per line
//! (`{"level":"error","msg":"...","time":"..."}`): the error containerd shows is the last
//! `error` message the command logged, as with runc-v2.

use std::{
    ffi::OsStr,
    io::{Read, Seek, SeekFrom},
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use log::{debug, warn};

use crate::{
    error::{Error, Result},
    model,
    stdio::ChildStdio,
    sys::{self, Signal},
    task::exits::Router,
};

/// How long a runtime command may take when the request has no deadline of its own (or no
/// request waits for it): the kubelet's default for a runtime request, 2 minutes. runc-v2
/// waits for ever without one; a hook that hangs, or a `runc delete` stuck on a process in
/// `D` state, would then hold the container as long as the shim lives.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// One OCI runtime binary with its state directory.
#[derive(Clone)]
pub struct Runtime {
    /// The binary.
    pub binary: PathBuf,
    /// Its state directory (`--root`).
    pub root: PathBuf,
    /// Its global flags after `--root` and `--log` (`--systemd-cgroup`, `--criu PATH`).
    pub flags: Vec<String>,
    /// Its log (`--log`): the container's `log.json` in the bundle, as runc-v2's.
    pub log: PathBuf,
    /// Where the shim's children's exits arrive.
    router: Arc<Router>,
}

/// What a command of the runtime wrote on its stdout, and its pidfd (which says "exited").
pub struct Ran {
    /// Its stdout, when asked for.
    pub stdout: Vec<u8>,
    /// The runtime process's pidfd.
    pub pidfd: Arc<OwnedFd>,
}

impl Runtime {
    /// The runtime `binary` with its state in `root`, logging into `log`.
    pub fn new(
        binary: &Path,
        root: &Path,
        flags: Vec<String>,
        log: &Path,
        router: Arc<Router>,
    ) -> Runtime {
        Runtime {
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
            flags,
            log: log.to_path_buf(),
            router,
        }
    }

    /// The binary's file name, for messages.
    pub fn name(&self) -> String {
        self.binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Runs `args` (a subcommand and its arguments) with `stdio` as the runtime's stdin,
    /// stdout and stderr (`/dev/null` without), and returns once it exited: `Ok` for
    /// status 0, else the runtime's own error.
    pub async fn run<S: AsRef<OsStr>>(&self, args: &[S], stdio: Option<ChildStdio>) -> Result<Ran> {
        self.run_to_exit(args, stdio, false).await
    }

    /// [`Runtime::run`], returning what the command wrote on stdout (`ps`).
    pub async fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Vec<u8>> {
        Ok(self.run_to_exit(args, None, true).await?.stdout)
    }

    /// Spawns the runtime with `args` and waits, through the reaper, for its exit.
    async fn run_to_exit<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdio: Option<ChildStdio>,
        capture: bool,
    ) -> Result<Ran> {
        let what = args
            .first()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let log_start = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let has_stdio = stdio.is_some();
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"])
            .args(&self.flags)
            .args(args);
        // SAFETY: prctl is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(sys::child::die_with_parent);
        }
        match stdio {
            Some(stdio) => command
                .stdin(ChildStdio::for_command(stdio.stdin))
                .stdout(ChildStdio::for_command(stdio.stdout))
                .stderr(ChildStdio::for_command(stdio.stderr)),
            None => command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        };
        // Without the process's stdio, the runtime's stderr is read too: a runtime may say
        // there what it did not log (a fatal error before its logger was set up).
        let mut out_pipe = None;
        let mut err_pipe = None;
        if capture {
            let (read, write) = pipe()?;
            command.stdout(Stdio::from(write));
            out_pipe = Some(read);
        }
        if !has_stdio {
            let (read, write) = pipe()?;
            command.stderr(Stdio::from(write));
            err_pipe = Some(read);
        }
        let spawn_error = |e| Error::Io {
            context: format!("run {} {what}", self.binary.display()),
            source: e,
        };
        let child = command.spawn().map_err(spawn_error)?;
        // No `.await` since the spawn: the reaper cannot have taken the child yet.
        let (pidfd, exit) = self
            .router
            .child_exit(child.id() as i32)
            .map_err(spawn_error)?;
        // Our copies of the pipes' write ends went with `command`; a reader sees end-of-file
        // once the runtime (and whatever it left running with them) closed theirs.
        drop(command);
        let deadline = model::deadline(DEFAULT_DEADLINE);
        let finished = tokio::time::timeout_at(deadline.into(), async {
            let (stdout, stderr) = tokio::join!(read_all(out_pipe), read_all(err_pipe));
            (stdout, stderr, exit.code().await)
        });
        let Ok((stdout, stderr, code)) = finished.await else {
            // Its exit, whenever it comes, is the reaper's; nobody waits for it any more.
            let _ = sys::signal_pidfd(&*pidfd, Signal::KILL);
            let limit = deadline.saturating_duration_since(started);
            let message = format!(
                "{} {what} did not finish within {limit:.1?} (the request's deadline, or {:?}): \
                 killed",
                self.name(),
                DEFAULT_DEADLINE
            );
            warn!("{message}");
            return Err(Error::DeadlineExceeded(message));
        };
        debug!("{} {what}: exit code {code}", self.name());
        if code != 0 {
            return Err(self.error(&what, code, log_start, &stderr));
        }
        Ok(Ran { stdout, pidfd })
    }

    /// The error of a command that failed with `code`: the last error it logged since
    /// `log_start`, or its code.
    fn error(&self, what: &str, code: i32, log_start: u64, stderr: &[u8]) -> Error {
        let said = String::from_utf8_lossy(stderr);
        let said = said.trim();
        let message = match last_error(&self.log, log_start) {
            Some(message) => format!("{} {what} failed: {message}", self.name()),
            None if !said.is_empty() => format!("{} {what} failed: {said}", self.name()),
            None => format!(
                "{} {what} failed with exit code {code} (nothing in its log {})",
                self.name(),
                self.log.display()
            ),
        };
        // What the runtime refused is the request's content (a spec, a process), as far as
        // containerd's clients are concerned: runc-v2 answers the same with Unknown; a
        // code the client can branch on is more use.
        if what == "kill" && message.contains("not running") {
            return Error::NotFound(message);
        }
        Error::FailedPrecondition(message)
    }
}

/// A pipe, both ends close-on-exec (the child gets its end through `dup2`).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))
}

/// Reads `fd` (if any) to its end without blocking the thread.
async fn read_all(fd: Option<OwnedFd>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(fd) = fd else {
        return out;
    };
    if let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        use tokio::io::AsyncReadExt;
        let _ = pipe.read_to_end(&mut out).await;
    }
    out
}

/// The `msg` of the last `"level":"error"` line of `log` from byte `from`.
pub fn last_error(log: &Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["level"] == "error" || entry["level"] == "fatal")
        .find_map(|entry| entry["msg"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_logged_after_the_start_is_the_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.json");
        let old = "{\"level\":\"error\",\"msg\":\"an old failure\"}\n";
        let new = concat!(
            "{\"level\":\"info\",\"msg\":\"starting\"}\n",
            "not json\n",
            "{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n",
        );
        std::fs::write(&log, format!("{old}{new}")).expect("write");
        assert_eq!(
            last_error(&log, old.len() as u64).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        std::fs::write(&log, old).expect("write");
        assert_eq!(last_error(&log, old.len() as u64), None);
    }
}
