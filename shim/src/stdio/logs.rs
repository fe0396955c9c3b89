//! Log URIs: where a process's stdout and stderr go when containerd hands over not FIFOs but
//! a URI (`ctr run --log-uri`, nerdctl for every detached container).
//!
//! - `file:///path`: stdout and stderr are appended to one file (made with mode 0644, its
//!   parent directories 0755). The process writes into the file itself: the shim copies
//!   nothing.
//! - `binary:///path/to/logger?key=value&...`: the shim starts the logger with the process's
//!   stdout on its fd 3 and stderr on fd 4 (the read ends of two pipes whose write ends the
//!   process gets), a pipe on fd 5 it closes (or writes a byte to) once ready, the query's
//!   pairs as arguments (`key value ...`), and `CONTAINER_ID` and `CONTAINER_NAMESPACE` as
//!   its whole environment. The shim waits until it is ready before the process is
//!   created. When the process is deleted the logger gets SIGTERM, and SIGKILL 12 s later
//!   if it is still there. This is the protocol of containerd's runc shim and its
//!   `runtime/v2/logging` package, so loggers written for it work here.
//!
//! The scheme of the stdout URI decides for both streams, as in containerd's runc shim.
//! stdin stays a FIFO (or nothing).
//!
//! A bad URI is refused before anything is started: an unknown scheme, a relative path, a
//! logger that is missing, not executable, never ready within [`READY_LIMIT`], or gone
//! before it was ready. All are `InvalidArgument`.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{
            fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
            process::CommandExt,
        },
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use log::{info, warn};
use nix::{fcntl::OFlag, unistd::pipe2};

use crate::{
    error::{Error, Result},
    model::host::members::Registry,
    sys::{self, Signal},
};

/// How long a logger may take to say it is ready.
pub const READY_LIMIT: Duration = Duration::from_secs(10);

/// How long a logger has to exit after SIGTERM before it gets SIGKILL (containerd's runc
/// shim waits as long).
pub const TERM_LIMIT: Duration = Duration::from_secs(12);

/// Where output goes, by the URI containerd sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogUri {
    /// `file:///path`.
    File(PathBuf),
    /// `binary:///path?k=v`: the logger and its arguments.
    Binary {
        /// The logger's executable.
        path: PathBuf,
        /// The query's pairs, flattened: `k`, `v`, ...
        args: Vec<String>,
    },
}

/// Who the logger logs for: its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogContext {
    /// `CONTAINER_ID`.
    pub container_id: String,
    /// `CONTAINER_NAMESPACE`.
    pub namespace: String,
}

impl LogUri {
    /// The URI in `stdout`, or `None` for a plain path (a FIFO) or nothing.
    pub fn parse(stdout: &str) -> Result<Option<LogUri>> {
        let Some((scheme, rest)) = stdout.split_once("://") else {
            return Ok(None);
        };
        let invalid = |why: &str| Error::InvalidArgument(format!("log URI {stdout:?}: {why}"));
        if scheme != "file" && scheme != "binary" {
            return Err(invalid(&format!(
                "unknown scheme {scheme:?}: the shim takes FIFO paths, file:// and binary://"
            )));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') {
            return Err(invalid(
                "the path must be absolute, as in file:///var/log/x.log (three slashes)",
            ));
        }
        let path = PathBuf::from(percent_decode(path).map_err(&invalid)?);
        match scheme {
            "file" => {
                if !query.is_empty() {
                    return Err(invalid("a file URI takes no query"));
                }
                Ok(Some(LogUri::File(path)))
            }
            "binary" => {
                let mut args = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    for part in [key, value] {
                        args.push(percent_decode(&part.replace('+', " ")).map_err(&invalid)?);
                    }
                }
                Ok(Some(LogUri::Binary { path, args }))
            }
            _ => unreachable!("checked above"),
        }
    }
}

/// `%XX` escapes decoded, as Go's `url.Parse` does for containerd: a `%` not followed by two
/// hex digits is an error there, so it is here too (the `percent-encoding` crate would keep
/// it as it is).
fn percent_decode(text: &str) -> std::result::Result<String, &'static str> {
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        let hex = rest.get(at + 1..at + 3).ok_or("a truncated %-escape")?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a bad %-escape");
        }
        rest = &rest[at + 3..];
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "%-escapes that are not UTF-8")
}

/// Opens (making it and its directories if needed) the file of a `file://` URI for
/// appending: the process's stdout and stderr.
pub fn open_file(path: &Path) -> Result<File> {
    let failed = |what: &str, e: io::Error| {
        Error::InvalidArgument(format!("log file {}: {what}: {e}", path.display()))
    };
    // The modes are set, not left to the shim's umask: the files are for the host's log
    // readers, as with containerd's runc shim.
    let mut missing = Vec::new();
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        dir = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o755).create(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(failed("cannot make its directory", e))
            }
            _ => {
                let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
            }
        }
    }
    let existed = path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| failed("cannot open", e))?;
    if !existed {
        let _ = file.set_permissions(fs::Permissions::from_mode(0o644));
    }
    Ok(file)
}

/// A running logger of a `binary://` URI.
pub struct Logger {
    /// Its pid, which leads its process group.
    pub pid: i32,
    /// A handle on it that survives its pid's reuse; `None` once stopped.
    pidfd: Option<OwnedFd>,
    /// The process groups registered as nobody's task: its own, and those of the processes
    /// a logger that daemonized left reading its pipes.
    groups: Vec<i32>,
    /// Where they are registered.
    registry: Arc<Registry>,
}

/// A started logger and the write ends the process gets as stdout and stderr.
pub struct LoggerEnds {
    /// The logger.
    pub logger: Logger,
    /// The process's stdout.
    pub stdout: OwnedFd,
    /// The process's stderr.
    pub stderr: OwnedFd,
}

impl Logger {
    /// Starts the logger of `path` with `args` and waits until it is ready (a byte or
    /// end-of-file on its fd 5), at most [`READY_LIMIT`]. The wait is an `.await` on the
    /// pipe: the shim's other containers go on meanwhile.
    ///
    /// A logger may daemonize: its first process closes fd 5 and exits, leaving a child
    /// that reads fds 3 and 4 (containerd's runc shim accepts that too). Only a logger that
    /// is gone before it was ready, its first process exited and nobody reading the
    /// process's output, is refused.
    pub async fn spawn(
        path: &Path,
        args: &[String],
        context: &LogContext,
        registry: &Arc<Registry>,
    ) -> Result<LoggerEnds> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"));
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        // The shim's end only: awaited on the runtime's reactor.
        set_nonblocking(&ready_read).map_err(Error::io("logger pipe"))?;
        let fds = [
            out_read.as_raw_fd(),
            err_read.as_raw_fd(),
            ready_write.as_raw_fd(),
        ];
        let (pid, pidfd) = launch(path, args, context, fds)?;
        let watched = pidfd.try_clone().map_err(Error::io("dup a pidfd"))?;
        registry.add_logger(pid);
        drop((out_read, err_read, ready_write));
        let mut logger = Logger {
            pid,
            pidfd: Some(pidfd),
            groups: vec![pid],
            registry: registry.clone(),
        };
        match tokio::time::timeout(READY_LIMIT, ready(ready_read, watched, &out_write)).await {
            Ok(Ok(())) => {}
            failed => {
                let why = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => format!(
                        "not ready within {READY_LIMIT:?} (it must write a byte to, or close, fd 5)"
                    ),
                };
                if let Some(pidfd) = &logger.pidfd {
                    let _ = sys::signal_pidfd(pidfd, Signal::KILL);
                }
                return Err(Error::InvalidArgument(format!(
                    "logger {}: {why}",
                    path.display()
                )));
            }
        }
        if logger.pidfd.as_ref().is_some_and(sys::pidfd_exited) {
            // It daemonized: what reads its pipes now is nobody's task either.
            for group in groups_reading(&out_write) {
                registry.add_logger(group);
                logger.groups.push(group);
            }
        }
        info!("logger {} ({pid}) ready", path.display());
        Ok(LoggerEnds {
            logger,
            stdout: out_write,
            stderr: err_write,
        })
    }

    /// Ends the logger: SIGTERM, then SIGKILL after [`TERM_LIMIT`]. Its input has reached
    /// end-of-file by now (the process is gone), so a logger that flushes and exits at
    /// end-of-file is done before the signal matters.
    pub async fn stop(mut self) {
        if let Some(pidfd) = self.pidfd.take() {
            let groups = std::mem::take(&mut self.groups);
            stop(self.pid, pidfd, &groups, &self.registry).await;
        }
    }
}

impl Drop for Logger {
    /// A logger dropped without [`Logger::stop`] (its process was never started, or an
    /// exec's was deleted) is stopped the same way, in the background.
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let (pid, registry) = (self.pid, self.registry.clone());
        let groups = std::mem::take(&mut self.groups);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { stop(pid, pidfd, &groups, &registry).await });
            }
            Err(_) => {
                let _ = sys::signal_pidfd(&pidfd, Signal::TERM);
            }
        }
    }
}

/// Spawns the logger `path` with `args`, for `context`, with `fds` on its fds 3, 4 and 5;
/// returns its pid and a pidfd on it.
fn launch(
    path: &Path,
    args: &[String],
    context: &LogContext,
    fds: [std::os::fd::RawFd; 3],
) -> Result<(i32, OwnedFd)> {
    let mut command = Command::new(path);
    command
        .args(args)
        .env_clear()
        .env("CONTAINER_ID", &context.container_id)
        .env("CONTAINER_NAMESPACE", &context.namespace)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // A process group of its own, which the registry records as nobody's task.
    command.process_group(0);
    // SAFETY: only `fcntl`, `dup2`, `close_range` and `umask` (async-signal-safe) on
    // this forked process's own state.
    unsafe {
        command.pre_exec(move || {
            sys::child::place_fds(&fds)?;
            // Nothing else of the shim's reaches the logger.
            sys::child::close_on_exec_from(3 + fds.len() as i32);
            // Not the shim's private umask: its files are for the host's log readers.
            sys::child::set_umask(0o022);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        Error::InvalidArgument(format!("logger {}: cannot start: {e}", path.display()))
    })?;
    let pid = child.id() as i32;
    // No await since the spawn: the reaper cannot have collected it.
    let pidfd = sys::pidfd_open(pid).map_err(Error::io(format!("pidfd_open({pid})")))?;
    Ok((pid, pidfd))
}

/// SIGTERM to the logger `pid`, SIGKILL after [`TERM_LIMIT`], waiting on its pidfd; its
/// `groups` are forgotten once it is gone.
async fn stop(pid: i32, pidfd: OwnedFd, groups: &[i32], registry: &Registry) {
    if sys::signal_pidfd(&pidfd, Signal::TERM).is_ok() {
        let waited = pidfd.try_clone().map(crate::sys::exited);
        let exited = match waited {
            Ok(exited) => tokio::time::timeout(TERM_LIMIT, exited).await.is_ok(),
            Err(_) => false,
        };
        if !exited {
            warn!("logger {pid} still runs {TERM_LIMIT:?} after SIGTERM: SIGKILL");
            let _ = sys::signal_pidfd(&pidfd, Signal::KILL);
        }
    }
    for group in groups {
        registry.remove_logger(*group);
    }
}

/// The process groups of the shim's descendants that hold the other end of the pipe whose
/// write end is `end` (a daemonized logger reading it).
fn groups_reading(end: &OwnedFd) -> Vec<i32> {
    let Ok(pipe) = fs::read_link(format!("/proc/self/fd/{}", end.as_raw_fd())) else {
        return Vec::new();
    };
    let shim = std::process::id() as i32;
    let mut groups: Vec<i32> = crate::sys::procfs::descendants_exhaustive(shim)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            fs::read_dir(format!("/proc/{}/fd", p.pid))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|link| link == pipe))
        })
        .map(|p| p.pgid)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Waits for a byte or end-of-file on the logger's `ready` pipe. End-of-file also comes
/// when the logger died. Its first process (`pidfd`) has then exited, and nobody reads the
/// process's stdout (`stdout` is its write end, which polls an error once no reader is
/// left): such a logger is refused. A pidfd polls readable only once the kernel has
/// released every file of the process, so the look at `stdout` comes after that.
async fn ready(ready: OwnedFd, pidfd: OwnedFd, stdout: &OwnedFd) -> io::Result<()> {
    let ready = sys::on_reactor(ready)?;
    let mut byte = [0u8; 1];
    let got = loop {
        let mut guard = ready.readable().await?;
        match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), &mut byte)?)) {
            Ok(result) => break result?,
            Err(_would_block) => continue,
        }
    };
    if got == 0 {
        // Closed on purpose, or on its way out: a process's files close just before its
        // exit shows. A logger that runs on is not waited for longer than this.
        let gone = tokio::time::timeout(EXIT_GRACE, crate::sys::exited(pidfd))
            .await
            .is_ok();
        if gone && !sys::has_reader(stdout) {
            return Err(io::Error::other("exited before it was ready"));
        }
    }
    Ok(())
}

/// How long a logger that closed its fd 5 is watched for an exit that would mean it died.
const EXIT_GRACE: Duration = Duration::from_millis(20);

/// Sets `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_of_both_schemes_and_plain_paths() {
        assert_eq!(LogUri::parse("/run/fifo/x-stdout").unwrap(), None);
        assert_eq!(LogUri::parse("").unwrap(), None);
        assert_eq!(
            LogUri::parse("file:///var/log/a%20b.log").unwrap(),
            Some(LogUri::File(PathBuf::from("/var/log/a b.log")))
        );
        assert_eq!(
            LogUri::parse("binary:///usr/bin/logger?path=/x&max-size=10&flag").unwrap(),
            Some(LogUri::Binary {
                path: PathBuf::from("/usr/bin/logger"),
                args: ["path", "/x", "max-size", "10", "flag", ""]
                    .map(String::from)
                    .to_vec(),
            })
        );
    }

    #[test]
    fn bad_uris_are_invalid_arguments_saying_why() {
        for (uri, why) in [
            ("http://host/x", "unknown scheme"),
            ("file://relative/x", "must be absolute"),
            ("binary://logger", "must be absolute"),
            ("file:///x?y=1", "no query"),
            ("file:///x%zz", "%-escape"),
        ] {
            match LogUri::parse(uri) {
                Err(Error::InvalidArgument(message)) => assert!(message.contains(why), "{message}"),
                other => panic!("{uri}: {other:?}"),
            }
        }
    }
}
