//! `sample-logger`: a logging binary for containerd's `binary://` log URIs, the way
//! nerdctl logs every detached container.
//!
//! ```text
//! ctr run -d --log-uri 'binary:///usr/local/bin/sample-logger?path=/var/log/app.log&max-size=10485760' ...
//! ```
//!
//! The shim starts it with the task's stdout on fd 3, its stderr on fd 4, and fd 5 to close
//! once ready; the URI's query arrives as arguments, `key value` pairs:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `path` | the log file (its directory is made) | required |
//! | `format` | `cri` (the kubelet's lines, `kubectl logs` reads them) or `json` (docker's `json-file`) | `cri` |
//! | `max-size` | bytes after which the file rotates (`app.log` → `app.log.1`) | 10 MiB |
//! | `max-files` | files kept, the current one included | 5 |
//!
//! It exits when both streams reach end-of-file (the task and everything that shared its
//! output are gone), or on SIGTERM (the shim's way to end it) once what is already in the
//! pipes is written. `CONTAINER_ID` and `CONTAINER_NAMESPACE` are in its environment.

mod sink;

use std::{
    io,
    os::fd::RawFd,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::SystemTime,
};

use sink::{Format, Sink};

/// The longest line kept whole; a longer one is written in parts (`P` in the CRI format).
const MAX_LINE: usize = 16 * 1024;

/// Set by SIGTERM.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

/// What the arguments ask for.
struct Options {
    path: PathBuf,
    format: Format,
    max_size: u64,
    max_files: u32,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            path: PathBuf::new(),
            format: Format::Cri,
            max_size: 10 << 20,
            max_files: 5,
        };
        for pair in args.chunks(2) {
            let (key, value) = (pair[0].as_str(), pair.get(1).map_or("", String::as_str));
            let number = || value.parse().map_err(|e| format!("{key} {value:?}: {e}"));
            match key {
                "path" => options.path = PathBuf::from(value),
                "format" => {
                    options.format = match value {
                        "cri" => Format::Cri,
                        "json" => Format::Json,
                        other => return Err(format!("format {other:?}: cri or json")),
                    }
                }
                "max-size" => options.max_size = number()?,
                "max-files" => options.max_files = number()? as u32,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if !options.path.is_absolute() {
            return Err("path=<absolute path of the log file> is required".into());
        }
        Ok(options)
    }
}

/// One of the task's streams: its descriptor, and the start of a line not ended yet.
struct Stream {
    name: &'static str,
    fd: RawFd,
    pending: Vec<u8>,
    open: bool,
}

impl Stream {
    /// Takes what `read` returned: every complete line goes to `sink`, and a part longer
    /// than [`MAX_LINE`].
    fn take(&mut self, data: &[u8], sink: &mut Sink) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        let now = SystemTime::now();
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            sink.line(self.name, &self.pending[start..start + end], true, now);
            start += end + 1;
        }
        while self.pending.len() - start > MAX_LINE {
            sink.line(
                self.name,
                &self.pending[start..start + MAX_LINE],
                false,
                now,
            );
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }

    /// End of the stream: a last line without a newline is still a line.
    fn finish(&mut self, sink: &mut Sink) {
        self.open = false;
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            sink.line(self.name, &rest, true, SystemTime::now());
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("sample-logger: {err}");
            return ExitCode::from(2);
        }
    };
    // Not ready (fd 5 still open) until the file is: a logger that cannot log fails the
    // task's creation instead of dropping its output.
    let mut sink = match Sink::open(
        &options.path,
        options.max_size,
        options.max_files,
        options.format,
    ) {
        Ok(sink) => sink,
        Err(err) => {
            eprintln!("sample-logger: {}: {err}", options.path.display());
            return ExitCode::from(1);
        }
    };
    // SAFETY: installs a handler that only stores to an atomic; closes our own fd 5.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
        libc::close(5);
    }
    let mut streams = [
        Stream {
            name: "stdout",
            fd: 3,
            pending: Vec::new(),
            open: true,
        },
        Stream {
            name: "stderr",
            fd: 4,
            pending: Vec::new(),
            open: true,
        },
    ];
    match pump(&mut streams, &mut sink) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sample-logger: {err}");
            ExitCode::from(1)
        }
    }
}

/// Reads both streams until both end, or until SIGTERM and nothing more is waiting.
fn pump(streams: &mut [Stream; 2], sink: &mut Sink) -> io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    while streams.iter().any(|s| s.open) {
        let terminated = TERMINATED.load(Ordering::SeqCst);
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: if s.open { s.fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // After SIGTERM, only what is already there: no waiting.
        let timeout = if terminated { 0 } else { 1000 };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ready == 0 && terminated {
            break;
        }
        for (stream, fd) in streams.iter_mut().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            // SAFETY: reads into a buffer of the length given, from our own descriptor.
            let n = unsafe { libc::read(stream.fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            match n {
                0 => stream.finish(sink),
                n if n > 0 => stream.take(&buffer[..n as usize], sink),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        stream.finish(sink);
                    }
                }
            }
        }
    }
    for stream in streams.iter_mut() {
        stream.finish(sink);
    }
    Ok(())
}
