//! Standard I/O: joining the task's stdin, stdout and stderr to the FIFOs containerd names.
//!
//! A client (`ctr`, or containerd's CRI for logs) creates up to three FIFOs and passes their
//! paths in `Create`. The shim never hands a FIFO to the task directly. Each stream goes
//! through an ordinary pipe, and a small copy task moves bytes between pipe and FIFO:
//!
//! ```text
//! task stdout ─pipe─▶ shim splice ─▶ stdout FIFO ─▶ ctr
//! ctr ─▶ stdin FIFO ─▶ shim copy ─pipe─▶ task stdin
//! ```
//!
//! stdout and stderr move with `splice(2)`: pipe and FIFO are both pipes, so the kernel
//! hands the pages of one's buffer to the other, and the bytes never pass through the
//! shim's memory. The copy loop stays for a terminal (a pty is not a pipe) and for stdin.
//!
//! Instead of FIFOs, containerd may hand over a *log URI* for stdout and stderr
//! (`file://`, `binary://`): see `stdio/logs.rs`. The process then writes into the file or the
//! logger's pipes itself, and the shim copies nothing.
//!
//! The shim keeps a **reader of its own** on each output FIFO (the *keeper*, opened read-only
//! beside the write end the copy uses), so a write never fails with `EPIPE` when no client is
//! attached (a detached task would otherwise die of `SIGPIPE` at its first line); a later
//! `ctr task attach` opens the same FIFO and reads on. Keeping the two ends apart lets the
//! shim ask the kernel whether *another* reader is there ([`Io::flushed`]): an exit waits for
//! a connected reader to take the output, and for nobody else. The stdin FIFO is opened
//! read-write, which makes the shim a writer too, so a client that detaches does not
//! deliver end-of-file to the task. Only `CloseIO` does that.
//!
//! Only FIFOs (or an empty path, meaning `/dev/null`) are accepted: the shim runs as root, and
//! opening an arbitrary path it was handed would let a client write anywhere.
//!
//! With `terminal: true` (`ctr run -t`) the process gets a pseudo-terminal instead of pipes:
//! the shim allocates it, hands the process the slave side as stdin, stdout and stderr (and
//! as its controlling terminal, see `model/host/mod.rs`), and copies the master side to the stdout
//! FIFO and from the stdin FIFO. `ResizePty` sets its window size.

pub mod logs;

use std::{
    fs::{File, OpenOptions},
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::{FileTypeExt, OpenOptionsExt},
    },
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use log::debug;
use nix::{fcntl::OFlag, unistd::pipe2};
use tokio::{
    io::{unix::AsyncFd, AsyncReadExt, AsyncWriteExt},
    net::unix::pipe,
    sync::oneshot,
    task::JoinHandle,
};

use self::logs::{LogContext, LogUri, Logger};
use crate::{
    error::{Error, Result},
    model::host::members::Registry,
    sys,
};

/// The FIFO paths of one process, as containerd sent them. Empty means "none".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Where the task's input comes from.
    pub stdin: String,
    /// Where the task's output goes.
    pub stdout: String,
    /// Where the task's errors go.
    pub stderr: String,
    /// Whether the process gets a pseudo-terminal instead of pipes.
    pub terminal: bool,
}

/// Who makes a terminal process's pseudo-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtyMaker {
    /// The shim, before the process exists: the child gets the slave side as its stdio.
    Shim,
    /// The process model, as the process is made (an OCI runtime makes it inside the
    /// container and hands the master over its console socket): the child's stdio is
    /// `/dev/null`, and the master comes through [`Io::attach_terminal`].
    Model,
}

/// The shim's ends of the streams, not copying yet: nothing starts copying for a process
/// that failed to spawn.
pub struct PendingIo {
    shim_ends: ShimEnds,
    /// The pty master, kept for `ResizePty`.
    pty: Option<Master>,
    /// The logger of a `binary://` URI.
    logger: Option<Logger>,
    /// A terminal whose master the process model has yet to hand over.
    terminal: Option<TerminalEnds>,
}

/// The far ends of a terminal's copies: where its output goes, where its input comes from.
struct TerminalEnds {
    destination: Option<Destination>,
    stdin: Option<pipe::Receiver>,
}

/// Where one output stream goes: the write end of its FIFO (or a logger's pipe), and the
/// shim's own read-only handle on a FIFO (none for a logger, which reads it itself).
struct Destination {
    to: pipe::Sender,
    keeper: Option<OwnedFd>,
}

/// One output copy's three ends: the task's pipe (or a terminal's master), and where it goes.
struct OutputEnds {
    from: Source,
    to: Destination,
}

/// A terminal's master, held once: its copies read and write it, `ResizePty` sizes it, the
/// exit's watch asks it what is unread. One descriptor, as runc-v2 holds one (containerd's
/// CRI tests count the shim's handles on `/dev/ptmx`), registered with the reactor once for
/// both directions.
type Master = Arc<AsyncFd<OwnedFd>>;

/// Where an output copy reads: the task's pipe, or its terminal's master.
enum Source {
    Pipe(pipe::Receiver),
    Terminal(Master),
}

/// Where the stdin copy writes: the task's pipe, or its terminal's master.
enum Sink {
    Pipe(pipe::Sender),
    Terminal(Master),
}

impl Sink {
    /// Writes all of `bytes`, waiting for room as it needs.
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let master = match self {
            Sink::Pipe(pipe) => return pipe.write_all(bytes).await,
            Sink::Terminal(master) => master,
        };
        let mut left = bytes;
        while !left.is_empty() {
            let mut ready = master.writable().await?;
            match ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), left)?)) {
                Ok(written) => left = &left[written?..],
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

impl TerminalEnds {
    /// The copies' ends with the pty `master` between them, and the master as they share it.
    fn with_master(self, master: OwnedFd) -> Result<(ShimEnds, Master)> {
        // Non-blocking, so that a read after a stale readiness answers `WouldBlock` instead
        // of holding the shim's one thread (a runtime's console socket hands over a
        // blocking master).
        rustix::io::ioctl_fionbio(&master, true)
            .map_err(|e| Error::io("make the pty non-blocking")(e.into()))?;
        let master = Arc::new(sys::on_reactor_both_ways(master).map_err(Error::io("watch pty"))?);
        let stdout = self.destination.map(|to| OutputEnds {
            from: Source::Terminal(master.clone()),
            to,
        });
        let stdin = self
            .stdin
            .map(|fifo| (fifo, Sink::Terminal(master.clone())));
        let ends = ShimEnds {
            stdin,
            stdout,
            stderr: None,
        };
        Ok((ends, master))
    }
}

/// The child's stdin, stdout and stderr: each a descriptor, or `None` for `/dev/null`.
pub struct ChildStdio {
    /// Read end of the stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// Write end of the stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// Write end of the stderr pipe.
    pub stderr: Option<OwnedFd>,
}

impl ChildStdio {
    /// `/dev/null` for all three.
    pub fn null() -> ChildStdio {
        ChildStdio {
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }

    /// One end as `std::process::Command` takes it.
    pub fn for_command(end: Option<OwnedFd>) -> Stdio {
        end.map_or_else(Stdio::null, Stdio::from)
    }
}

/// The shim's side of each stream: (source, destination) for stdin, [`OutputEnds`] for the
/// outputs.
struct ShimEnds {
    stdin: Option<(pipe::Receiver, Sink)>,
    stdout: Option<OutputEnds>,
    stderr: Option<OutputEnds>,
}

/// The running copies of one process.
pub struct Io {
    /// The process, for the log.
    name: String,
    /// stdout and stderr copies: `Delete` waits for them so no output is lost, and stops
    /// them at its deadline.
    outputs: Vec<JoinHandle<()>>,
    /// What the shim watches of each output stream, to know when its reader has it all:
    /// until the process's exit is recorded.
    streams: Vec<Stream>,
    /// The shim's own readers of the output FIFOs once the exit is recorded, until
    /// `Delete`: a copy that goes on (a background child's output) never meets `EPIPE`.
    /// Readers only: the client still sees end-of-file once the copy ends.
    keepers: Vec<OwnedFd>,
    /// The stdin copy, kept to abort it if the process is deleted.
    input: Option<JoinHandle<()>>,
    /// Tells the stdin copy to deliver what is pending, then end-of-file (`CloseIO`).
    close_stdin: Option<oneshot::Sender<()>>,
    /// The pty master of a terminal process.
    pty: Option<Master>,
    /// The logger of a `binary://` URI, stopped once the output ended.
    logger: Option<Logger>,
    /// A terminal whose master the process model has yet to hand over.
    terminal: Option<TerminalEnds>,
}

/// Validates the paths, opens the FIFOs (or the log URI's file or logger, for `context`)
/// and makes the pipes: the child's ends, to hand to `std::process::Command`, and the
/// shim's. A terminal's pty is the shim's own, or comes later from the process model
/// (`pty`). Must run inside the runtime.
pub async fn open(
    paths: &StdioPaths,
    pty: PtyMaker,
    context: &LogContext,
    registry: &Arc<Registry>,
) -> Result<(ChildStdio, PendingIo)> {
    let uri = LogUri::parse(&paths.stdout)?;
    if paths.terminal {
        return open_terminal(paths, pty, uri, context, registry).await;
    }
    let (stdin_child, stdin) = match open_fifo("stdin", &paths.stdin, libc::O_RDWR)? {
        None => (None, None),
        Some(fifo) => {
            let (read, write) = make_pipe()?;
            let fifo = pipe::Receiver::from_file(fifo).map_err(Error::io("watch stdin FIFO"))?;
            let to_child = pipe::Sender::from_owned_fd(write).map_err(Error::io("stdin pipe"))?;
            (Some(read), Some((fifo, Sink::Pipe(to_child))))
        }
    };
    let mut logger = None;
    let ((stdout_child, stdout), (stderr_child, stderr)) = match uri {
        None => (
            output("stdout", &paths.stdout)?,
            output("stderr", &paths.stderr)?,
        ),
        Some(LogUri::File(path)) => {
            let file = logs::open_file(&path)?;
            let again = file.try_clone().map_err(Error::io("dup the log file"))?;
            (
                (Some(file.into()), None),
                (stderr_or_null(paths, again.into()), None),
            )
        }
        Some(LogUri::Binary { path, args }) => {
            let ends = Logger::spawn(&path, &args, context, registry).await?;
            logger = Some(ends.logger);
            let stderr = stderr_or_null(paths, ends.stderr);
            ((Some(ends.stdout), None), (stderr, None))
        }
    };
    let child = ChildStdio {
        stdin: stdin_child,
        stdout: stdout_child,
        stderr: stderr_child,
    };
    let shim_ends = ShimEnds {
        stdin,
        stdout,
        stderr,
    };
    Ok((
        child,
        PendingIo {
            shim_ends,
            pty: None,
            logger,
            terminal: None,
        },
    ))
}

/// `end` for the process's stderr, or `/dev/null` when the request left stderr empty (as
/// containerd's runc shim does with a log URI).
fn stderr_or_null(paths: &StdioPaths, end: OwnedFd) -> Option<OwnedFd> {
    (!paths.stderr.is_empty()).then_some(end)
}

/// A pseudo-terminal: the slave for the child, the master copied to and from the FIFOs, or
/// to a logger (`binary://`, what `nerdctl run -d -t` asks for: the terminal's output on the
/// logger's fd 3, nothing on its fd 4).
async fn open_terminal(
    paths: &StdioPaths,
    pty: PtyMaker,
    uri: Option<LogUri>,
    context: &LogContext,
    registry: &Arc<Registry>,
) -> Result<(ChildStdio, PendingIo)> {
    let mut logger = None;
    let destination = match uri {
        None => open_output_fifo("stdout", &paths.stdout)?,
        Some(LogUri::Binary { path, args }) => {
            let ends = Logger::spawn(&path, &args, context, registry).await?;
            logger = Some(ends.logger);
            let to = pipe::Sender::from_owned_fd(ends.stdout).map_err(Error::io("logger pipe"))?;
            Some(Destination { to, keeper: None })
        }
        Some(LogUri::File(_)) => {
            return Err(Error::InvalidArgument(format!(
                "stdout {}: a terminal's output goes to a FIFO or a binary:// logger, \
                 not a file",
                paths.stdout
            )))
        }
    };
    let stdin = open_fifo("stdin", &paths.stdin, libc::O_RDWR)?
        .map(|fifo| pipe::Receiver::from_file(fifo).map_err(Error::io("watch stdin FIFO")))
        .transpose()?;
    let ends = TerminalEnds { destination, stdin };
    let empty = ShimEnds {
        stdin: None,
        stdout: None,
        stderr: None,
    };
    if pty == PtyMaker::Model {
        let child = ChildStdio::null();
        let pending = PendingIo {
            shim_ends: empty,
            pty: None,
            logger,
            terminal: Some(ends),
        };
        return Ok((child, pending));
    }
    let pty = nix::pty::openpty(None, None).map_err(Error::sys("openpty"))?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(Error::io("dup pty"));
    let child = ChildStdio {
        stdin: Some(dup(&pty.slave)?),
        stdout: Some(dup(&pty.slave)?),
        stderr: Some(pty.slave),
    };
    let (shim_ends, master) = ends.with_master(pty.master)?;
    Ok((
        child,
        PendingIo {
            shim_ends,
            pty: Some(master),
            logger,
            terminal: None,
        },
    ))
}

/// The child's end of one output stream, and the shim's.
type Output = (Option<OwnedFd>, Option<OutputEnds>);

fn output(name: &str, path: &str) -> Result<Output> {
    let Some(to) = open_output_fifo(name, path)? else {
        return Ok((None, None));
    };
    // Both pipes keep the kernel's size (64 KiB). Larger ones move bulk output with fewer
    // wake-ups, but hold more of it when the task exits: `ctr run` stops reading as soon as
    // it has the exit and deletes the task, and what the FIFO still held was lost (seen with
    // 1 MiB pipes: 0.85 MiB of a 6.6 MiB output).
    let (read, write) = make_pipe()?;
    let from = pipe::Receiver::from_owned_fd(read).map_err(Error::io(format!("{name} pipe")))?;
    Ok((
        Some(write),
        Some(OutputEnds {
            from: Source::Pipe(from),
            to,
        }),
    ))
}

/// Opens an output FIFO as two ends: the shim's own reader (the keeper, opened first, which
/// never blocks) and the write end the copy uses (which needs a reader to open without
/// blocking: the keeper). The write end is opened through `/proc/self/fd` of the keeper, so
/// it is the very FIFO [`open_fifo`] checked, whatever the path names by then.
fn open_output_fifo(name: &str, path: &str) -> Result<Option<Destination>> {
    let Some(keeper) = open_fifo(name, path, libc::O_RDONLY)? else {
        return Ok(None);
    };
    let keeper = OwnedFd::from(keeper);
    let write = sys::reopen(&keeper, libc::O_WRONLY | libc::O_NONBLOCK)
        .map_err(Error::io(format!("open {name} {path} for writing")))?;
    let to = pipe::Sender::from_owned_fd(write).map_err(Error::io(format!("watch {name} FIFO")))?;
    Ok(Some(Destination {
        to,
        keeper: Some(keeper),
    }))
}

/// Opens a FIFO non-blocking, read-write (`O_RDWR`) or read-only (`O_RDONLY`), refusing
/// anything that is not a FIFO. `O_NOFOLLOW` plus a check on the opened file (not on the
/// path) leaves no window for a symlink or a swapped file.
fn open_fifo(name: &str, path: &str, mode: libc::c_int) -> Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(mode == libc::O_RDWR)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::InvalidArgument(format!("{name} {path}: cannot open: {e}")))?;
    let is_fifo = file
        .metadata()
        .map_err(Error::io(format!("stat {name} {path}")))?
        .file_type()
        .is_fifo();
    if !is_fifo {
        return Err(Error::InvalidArgument(format!(
            "{name} {path} is not a FIFO (only FIFOs or an empty path are accepted)"
        )));
    }
    Ok(Some(file))
}

/// A pipe whose ends are both close-on-exec: the child gets its end through `dup2` onto
/// 0, 1 or 2, which clears the flag on that copy only.
fn make_pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))
}

impl PendingIo {
    /// Starts the copies, once the process exists (those of a terminal the model has yet to
    /// hand over start with [`Io::attach_terminal`]).
    pub fn start(self, name: &str) -> Io {
        let mut io = Io {
            name: name.to_string(),
            streams: Vec::new(),
            keepers: Vec::new(),
            outputs: Vec::new(),
            input: None,
            close_stdin: None,
            pty: None,
            logger: self.logger,
            terminal: self.terminal,
        };
        io.copy(self.shim_ends, self.pty);
        io
    }
}

impl Io {
    /// Starts a copy for each of `ends`; `pty` is the terminal's master, if any.
    fn copy(&mut self, ends: ShimEnds, pty: Option<Master>) {
        let ShimEnds {
            stdin,
            stdout,
            stderr,
        } = ends;
        for (stream, ends) in [("stdout", stdout), ("stderr", stderr)] {
            if let Some(OutputEnds { from, to }) = ends {
                let label = format!("{} {stream}", self.name);
                // The shim's own handles on both sides, to see when the reader has it all.
                let held = Arc::new(AtomicUsize::new(0));
                match Stream::new(&from, &to.to, held.clone()) {
                    Some(stream) => self.streams.push(Stream {
                        keeper: to.keeper,
                        ..stream
                    }),
                    // No watch (out of descriptors): the exit waits for nothing, but the
                    // FIFO keeps the shim's reader all the same.
                    None => self.keepers.extend(to.keeper),
                }
                let mut to = to.to;
                self.outputs.push(tokio::spawn(async move {
                    let copied = match &from {
                        Source::Pipe(pipe) => splice_output(pipe, &mut to, &held).await,
                        Source::Terminal(master) => copy_terminal(master, &mut to, &held).await,
                    };
                    match copied {
                        Ok(bytes) => debug!("{label}: moved {bytes} bytes, end of stream"),
                        Err(e) => debug!("{label}: output ended: {e}"),
                    }
                }));
            }
        }
        if let Some((fifo, to_child)) = stdin {
            let (tx, rx) = oneshot::channel();
            self.close_stdin = Some(tx);
            self.input = Some(tokio::spawn(copy_stdin(fifo, to_child, rx)));
        }
        if pty.is_some() {
            self.pty = pty;
        }
    }

    /// The terminal's master, from the process model that made it: its copies start.
    pub fn attach_terminal(&mut self, master: OwnedFd) -> Result<()> {
        let Some(ends) = self.terminal.take() else {
            return Err(Error::FailedPrecondition(format!(
                "{}: a terminal was handed over for a process that asked for none",
                self.name
            )));
        };
        let (shim_ends, master) = ends.with_master(master)?;
        self.copy(shim_ends, Some(master));
        Ok(())
    }
}

/// How many bytes the pipe, FIFO or terminal `fd` holds.
fn unread(fd: impl AsFd) -> usize {
    rustix::io::ioctl_fionread(fd).unwrap_or(0) as usize
}

/// What the shim watches of one output stream while its process lives: where the output
/// still is (the task's pipe, the copy's hands, the FIFO), and whether anyone but the shim
/// reads it.
struct Stream {
    /// The task's pipe (a copy of its descriptor), or the terminal's master (shared, not
    /// copied: one handle on a terminal): output not copied yet.
    pipe: Box<dyn AsFd + Send + Sync>,
    /// The FIFO's write end: output its reader has yet to take, and whether it has one.
    fifo: OwnedFd,
    /// The shim's own reader of the FIFO, which keeps a detached task's output for a later
    /// reader (and its writes from `EPIPE`). Let go of for a moment to ask whether another
    /// reader is there ([`Stream::read_by_another`]).
    keeper: Option<OwnedFd>,
    /// Bytes the copy has read from the pipe and not yet written into the FIFO (shared with
    /// the copy, which runs on this same thread).
    held: Arc<AtomicUsize>,
}

impl Stream {
    /// The watch on a copy from `from` into `to` (its keeper is set by the caller); `None`
    /// when the descriptors cannot be duplicated (the exit then waits for nothing).
    fn new(from: &Source, to: &pipe::Sender, held: Arc<AtomicUsize>) -> Option<Stream> {
        let pipe: Box<dyn AsFd + Send + Sync> = match from {
            Source::Pipe(pipe) => Box::new(pipe.as_fd().try_clone_to_owned().ok()?),
            Source::Terminal(master) => Box::new(master.clone()),
        };
        Some(Stream {
            pipe,
            fifo: to.as_fd().try_clone_to_owned().ok()?,
            keeper: None,
            held,
        })
    }

    /// Whether a reader other than the shim has the FIFO open. Its own reader is let go of
    /// and opened again around the question: nothing else runs meanwhile (the copies are
    /// tasks of this same thread), so no write can meet a FIFO without readers.
    fn read_by_another(&mut self) -> bool {
        let Some(keeper) = self.keeper.take() else {
            return sys::has_reader(&self.fifo);
        };
        drop(keeper);
        let connected = sys::has_reader(&self.fifo);
        self.keeper = sys::reopen(&self.fifo, libc::O_RDONLY | libc::O_NONBLOCK).ok();
        connected
    }

    /// Whether the output the process wrote is all with the reader: nothing left in the
    /// pipe, in the copy's hands, or in the FIFO.
    fn delivered(&self) -> bool {
        unread(&*self.pipe) == 0
            && self.held.load(Ordering::Relaxed) == 0
            && unread(&self.fifo) == 0
    }
}

/// How much one `splice` may move: 16 pipe buffers of 64 KiB.
const SPLICE_CHUNK: usize = 1 << 20;

/// Below this many bytes waiting in the task's pipe, they are copied rather than spliced.
/// `splice` moves the pipe's buffers (a page each at most) as they are, and a FIFO holds 16
/// buffers: spliced one line at a time, a FIFO nobody reads would be full after 16 lines,
/// where copied lines share pages. Output that comes in bulk (a page or more at a time) is
/// spliced: full pages, and most of the bytes.
const SPLICE_MIN: usize = 4 * 1024;

/// Moves everything from the task's pipe `from` into the FIFO `to`, until end-of-file:
/// bulk with `splice(2)`, a trickle with a copy. Never spins, never loses a byte: a FIFO
/// nobody reads holds the task back, as a full pipe does.
///
/// `splice` answers `WouldBlock` for an empty input and for a full output alike; a zero-
/// timeout `poll` says which, and only that side's readiness is cleared, so the wait is
/// for the right event. End-of-file is seen without waiting for room in the FIFO.
///
/// `held` counts the bytes read from `from` and not yet written to `to`, for
/// [`Io::flushed`].
async fn splice_output(
    from: &pipe::Receiver,
    to: &mut pipe::Sender,
    held: &AtomicUsize,
) -> std::io::Result<u64> {
    let would_block = || Err::<(), _>(std::io::Error::from(std::io::ErrorKind::WouldBlock));
    let mut buffer = vec![0u8; SPLICE_MIN];
    let mut moved = 0u64;
    loop {
        from.readable().await?;
        let queued = rustix::io::ioctl_fionread(from).unwrap_or(0) as usize;
        if queued < SPLICE_MIN {
            // A trickle, end-of-file (0 queued, no writer left), or nothing after all.
            match copy_once(from, to, &mut buffer, held).await? {
                Some(n) => moved += n as u64,
                None => return Ok(moved),
            }
            continue;
        }
        to.writable().await?;
        match sys::splice(from, &*to, SPLICE_CHUNK) {
            Ok(0) => return Ok(moved),
            Ok(n) => moved += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (readable, writable) = sys::ready_now(from, &*to);
                if !readable {
                    let _ = from.try_io(would_block);
                }
                if !writable {
                    let _ = to.try_io(would_block);
                }
                if readable && writable {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Copies a terminal's output into `to` until the terminal closes (`EIO` once the last
/// process holding its slave is gone), a read and a write at a time (a pty is not a pipe:
/// no `splice`).
async fn copy_terminal(
    master: &Master,
    to: &mut pipe::Sender,
    held: &AtomicUsize,
) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 8 * 1024];
    let mut moved = 0u64;
    loop {
        let mut ready = master.readable().await?;
        let n = match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut buffer)?)) {
            Ok(read) => read?,
            Err(_would_block) => continue,
        };
        if n == 0 {
            return Ok(moved);
        }
        held.store(n, Ordering::Relaxed);
        let written = to.write_all(&buffer[..n]).await;
        held.store(0, Ordering::Relaxed);
        written?;
        moved += n as u64;
    }
}

/// One read of what `from` holds, written whole into `to`: the bytes moved (0 when there
/// was nothing after all), `None` at end-of-file. `held` counts them in between.
async fn copy_once(
    from: &pipe::Receiver,
    to: &mut pipe::Sender,
    buffer: &mut [u8],
    held: &AtomicUsize,
) -> std::io::Result<Option<usize>> {
    match from.try_read(buffer) {
        Ok(0) => Ok(None),
        Ok(n) => {
            held.store(n, Ordering::Relaxed);
            let written = to.write_all(&buffer[..n]).await;
            held.store(0, Ordering::Relaxed);
            written?;
            Ok(Some(n))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Some(0)),
        Err(e) => Err(e),
    }
}

/// Copies the stdin FIFO into the task until `close` fires; then delivers whatever input is
/// already waiting in the FIFO and drops the pipe, which the task reads as end-of-file.
async fn copy_stdin(
    mut fifo: pipe::Receiver,
    mut to_child: Sink,
    mut close: oneshot::Receiver<()>,
) {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        tokio::select! {
            read = fifo.read(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    if to_child.write_all(&buf[..n]).await.is_err() {
                        return; // the task closed its stdin or exited
                    }
                }
                _ => return,
            },
            _ = &mut close => break,
        }
    }
    while let Ok(n) = fifo.try_read(&mut buf) {
        if n == 0 || to_child.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

impl Io {
    /// `CloseIO`: the task reads end-of-file on stdin once pending input is delivered.
    pub fn close_stdin(&mut self) {
        if let Some(close) = self.close_stdin.take() {
            let _ = close.send(());
        }
    }

    /// `ResizePty`: sets the terminal's window size (the process gets SIGWINCH).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let pty = self
            .pty
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("the process has no terminal".into()))?;
        crate::sys::set_window_size(pty.get_ref(), width, height)
            .map_err(Error::io("resize the terminal"))
    }

    /// Waits, at most `limit`, until the output the process left in its pipes has reached
    /// its FIFOs and a reader has taken it; at once when nobody but the shim reads them
    /// (`ctr run -d`), or as soon as the reader goes. Called before the process's exit is
    /// recorded: a client learns of the exit from `Wait` and may stop reading at once (`ctr
    /// run` does), so output still on its way then was lost (10,450 of a million lines in
    /// one run of `task_api.rs`). Pipes have no event for "empty": they are looked at after
    /// 1, 2, 4, ... ms.
    pub async fn flushed(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            let waiting = self
                .streams
                .iter_mut()
                .any(|stream| !stream.delivered() && stream.read_by_another());
            if !waiting || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
            pause = (pause * 2).min(Duration::from_millis(32));
        }
        // Only the copy may write into the FIFOs from now on: when it ends, the client
        // sees end-of-file (an exec's background child holds the copy, not the FIFO).
        let streams = std::mem::take(&mut self.streams);
        self.keepers
            .extend(streams.into_iter().filter_map(|stream| stream.keeper));
    }

    /// Waits until stdout and stderr reached end-of-file (every writer of the pipes has
    /// exited), or `limit` passed: then the copies are stopped, and the pipes and FIFOs
    /// closed, so that the reader sees end-of-file (a background child of an exec, `sh -c
    /// 'sleep 365d &'`, holds the pipe open for as long as it lives).
    pub async fn wait_outputs(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        for copy in self.outputs.iter_mut() {
            if tokio::time::timeout_at(deadline, &mut *copy).await.is_err() {
                debug!(
                    "{}: output still open after {limit:?} (held by a child that outlived \
                     its process?): closed",
                    self.name
                );
                copy.abort();
                // The cancelled copy drops its descriptors before its handle resolves.
                let _ = copy.await;
            }
        }
        self.outputs.clear();
        self.streams.clear();
        self.keepers.clear();
        if let Some(logger) = self.logger.take() {
            logger.stop().await;
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        for copy in self.outputs.iter().chain(self.input.iter()) {
            copy.abort();
        }
    }
}

// A unit test's process has no reaper of its own: the test waits for its children.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn assert_invalid(result: Result<(ChildStdio, PendingIo)>, needle: &str) {
        match result {
            Err(Error::InvalidArgument(message)) => assert!(message.contains(needle), "{message}"),
            Err(other) => panic!("expected InvalidArgument, got {other:?}"),
            Ok(_) => panic!("expected InvalidArgument, got Ok"),
        }
    }

    #[tokio::test]
    async fn regular_files_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        let paths = |p: &std::path::Path| StdioPaths {
            stdout: p.display().to_string(),
            ..Default::default()
        };
        let registry = Arc::new(Registry::default());
        let context = LogContext::default();
        for (path, needle) in [
            (file.clone(), "is not a FIFO"),
            (link, "cannot open"),
            (dir.path().join("missing"), "cannot open"),
        ] {
            assert_invalid(
                open(&paths(&path), PtyMaker::Shim, &context, &registry).await,
                needle,
            );
        }
    }

    /// A detached task (`ctr run -d`) writes while no client has its stdout FIFO open; a
    /// later `ctr task attach` must still get that output. Here the child writes everything,
    /// the copy moves it into the FIFO, and only then does a reader open the FIFO.
    ///
    /// The child stays alive until after the read, as a detached task does: the copy holds
    /// the shim's FIFO descriptor until the task's output ends, and once no descriptor is
    /// open the kernel drops what the FIFO buffered.
    #[tokio::test]
    async fn output_reaches_the_fifo_even_with_no_reader_attached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let paths = StdioPaths {
            stdout: fifo.display().to_string(),
            ..Default::default()
        };
        let registry = Arc::new(Registry::default());
        let (child_stdio, pending) =
            open(&paths, PtyMaker::Shim, &LogContext::default(), &registry)
                .await
                .expect("open");
        // A second handle on the shim's own (read-write) FIFO descriptor, only to ask the
        // kernel how many bytes the FIFO holds: the test opens no reader of its own.
        let shim_fifo = {
            let ends = pending.shim_ends.stdout.as_ref().expect("stdout ends");
            ends.to.to.as_fd().try_clone_to_owned().expect("dup")
        };
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo one; echo two; read _"])
            .stdin(Stdio::piped())
            .stdout(ChildStdio::for_command(child_stdio.stdout))
            .spawn()
            .expect("run sh");
        let mut io = pending.start("test");

        // Nobody reads the FIFO: the copy must still move all eight bytes into it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let queued = rustix::io::ioctl_fionread(&shim_fifo).expect("FIONREAD");
            if queued == 8 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the FIFO holds {queued} of 8 bytes after 5 s with no reader attached"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A client attaches late and gets everything.
        let mut reader = pipe::OpenOptions::new()
            .open_receiver(&fifo)
            .expect("open reader");
        let mut buf = vec![0u8; 64];
        let n = reader.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"one\ntwo\n");

        // The task ends normally (no SIGPIPE along the way), and the copy with it.
        let mut stdin = child.stdin.take().expect("piped stdin");
        std::io::Write::write_all(&mut stdin, b"go\n").expect("let sh go");
        drop(stdin);
        let status = child.wait().expect("wait for sh");
        assert!(status.success(), "sh died, e.g. of SIGPIPE: {status}");
        io.wait_outputs(Duration::from_secs(5)).await;
    }

    /// A FIFO at a fresh path, and `open` of it as a process's stdout.
    async fn stdout_fifo(dir: &tempfile::TempDir) -> (std::path::PathBuf, ChildStdio, PendingIo) {
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let paths = StdioPaths {
            stdout: fifo.display().to_string(),
            ..Default::default()
        };
        let registry = Arc::new(Registry::default());
        let (child, pending) = open(&paths, PtyMaker::Shim, &LogContext::default(), &registry)
            .await
            .expect("open");
        (fifo, child, pending)
    }

    /// Writes `bytes` bytes into the process's stdout, as a task would before it exits: on
    /// a thread (a full pipe holds it back until the copy, on this runtime, moves on).
    fn write_and_exit(child: ChildStdio, bytes: usize) -> std::thread::JoinHandle<()> {
        let mut out = File::from(child.stdout.expect("stdout"));
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut out, &vec![b'x'; bytes]);
        })
    }

    /// A process whose output (1 MiB: more than the pipe and the FIFO hold) is still coming
    /// when it "exits", with `reader` (`true`: one that never reads) on its stdout FIFO.
    async fn loud(dir: &tempfile::TempDir, reader: bool) -> (Io, Option<File>) {
        let (fifo, child, pending) = stdout_fifo(dir).await;
        let io = pending.start("test");
        let reader = reader.then(|| File::open(&fifo).expect("open reader"));
        // The writer is left to end with the test.
        let _writer = write_and_exit(child, 1024 * 1024);
        tokio::time::sleep(Duration::from_millis(50)).await;
        (io, reader)
    }

    /// Lets the runtime run (the copies) until `thread` has finished.
    async fn until_finished<T>(thread: &std::thread::JoinHandle<T>) {
        while !thread.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `ctr run -d`: nobody but the shim reads the FIFO. The exit is recorded at once, not
    /// after the flush limit (the process's output has nobody to reach).
    #[tokio::test]
    async fn with_no_reader_an_exit_waits_for_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut io, _) = loud(&dir, false).await;
        let limit = Duration::from_secs(60);
        tokio::time::timeout(Duration::from_secs(10), io.flushed(limit))
            .await
            .expect("flushed waited for a reader that does not exist");
        io.wait_outputs(Duration::from_millis(100)).await;
    }

    /// `ctr run`: a reader is connected. The exit waits until it has taken everything.
    #[tokio::test]
    async fn a_connected_reader_gets_everything_before_the_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fifo, child, pending) = stdout_fifo(&dir).await;
        let mut io = pending.start("test");
        let reader = std::fs::File::open(&fifo).expect("open reader");
        let total = 512 * 1024;
        let writer = write_and_exit(child, total);
        // A slow reader, on a thread: 16 KiB every 5 ms.
        let read = std::thread::spawn(move || {
            let mut reader = reader;
            let mut got = 0;
            let mut buf = vec![0u8; 16 * 1024];
            while got < total {
                match std::io::Read::read(&mut reader, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            got
        });
        // The process "exits" once it has written everything.
        until_finished(&writer).await;
        let (pipe, fifo) = {
            let stream = &io.streams[0];
            (
                stream.pipe.as_fd().try_clone_to_owned().expect("dup"),
                stream.fifo.try_clone().expect("dup"),
            )
        };
        io.flushed(Duration::from_secs(60)).await;
        assert_eq!(
            (unread(&pipe), unread(&fifo)),
            (0, 0),
            "the exit came before the reader had taken everything"
        );
        until_finished(&read).await;
        assert_eq!(
            read.join().expect("reader"),
            total,
            "output lost at the exit"
        );
        io.wait_outputs(Duration::from_millis(100)).await;
    }

    /// A reader that stops reading and goes: the exit waits for it while it is there, and
    /// no longer once it has gone.
    #[tokio::test]
    async fn once_the_reader_goes_an_exit_waits_for_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut io, reader) = loud(&dir, true).await;
        let leaves = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(reader);
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), io.flushed(Duration::from_secs(60)))
            .await
            .expect("flushed waited for a reader that left");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "flushed returned while the reader was there"
        );
        leaves.join().expect("the reader's thread");
        io.wait_outputs(Duration::from_millis(100)).await;
    }

    /// An exec's background child (`sh -c 'sleep 365d &'`) holds its stdout open: at the
    /// drain limit the copy is stopped and the FIFO closed, so the reader sees end-of-file
    /// (containerd's `TestContainerDrainExecIOAfterExit`).
    #[tokio::test]
    async fn a_copy_held_open_is_closed_at_its_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fifo, child, pending) = stdout_fifo(&dir).await;
        let mut io = pending.start("test");
        let mut reader = pipe::OpenOptions::new()
            .open_receiver(&fifo)
            .expect("open reader");
        // The child's end stays open here, as in a background child.
        let _held_open = child.stdout;
        io.wait_outputs(Duration::from_millis(200)).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("the reader saw no end-of-file: the FIFO is still open")
            .expect("read");
        assert_eq!(n, 0);
    }
}
