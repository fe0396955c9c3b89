//! The shim's own log: one logfmt line per record, written into the `log` FIFO of the
//! bundle, which is how a shim's log reaches containerd's.
//!
//! containerd makes the FIFO `<bundle>/log` before it runs `start`, opens it read-write (so
//! it never reads end-of-file) and copies it, byte for byte, to its own stderr: `io.Copy(
//! os.Stderr, f)` in `binary.Start` ([`runtime/v2/binary.go`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/binary.go),
//! the FIFO from `openShimLog` in `runtime/v2/shim_unix.go`; 1.7 and 2.x do the same).
//! Nothing frames, prefixes or re-formats those bytes on the way: a record becomes one line
//! of containerd's log (of its journal, under systemd) only if the shim writes exactly one
//! well-formed line. containerd writes its own lines in logrus's text format, logfmt; the
//! Go shims log through logrus too, and tell their lines apart with a `runtime` field. So
//! does this module:
//!
//! ```text
//! time="2026-12-05T08:35:12.123456789Z" level=info msg="t1: started process 4242 \"\"" runtime=com.example.sample.v2
//! ```
//!
//! A value is left bare when logrus would leave it bare (letters, digits and `-._/@^+`)
//! and quoted as Go's `%q` otherwise: `"` and `\` get a backslash, a newline becomes `\n`,
//! other control characters `\t`, `\x01`, ... An empty value is `""`.
//!
//! The `containerd-shim` crate has a `FifoLogger` of its own, which `containerd_shim::run`
//! installs (this shim runs its daemon itself, `task/daemon.rs`). It writes `msg="{}"\n` with
//! `writeln!`, so every record ends in two newlines (an empty line in containerd's log after
//! each), and does not escape the message (a `"` in it ends the value early).
//!
//! Each record here is built whole and written with a single `write(2)` of at most
//! `PIPE_BUF` bytes (a longer message is cut and ends in `...`): POSIX makes such a write to
//! a pipe atomic, so a record is never split, nor mixed with another thread's. The FIFO is
//! non-blocking: if containerd stops reading and the pipe's buffer fills, records are
//! dropped instead of stalling the shim's one runtime thread; while containerd is down
//! (restarting), writes fail with `EPIPE` and records are lost too.
//!
//! Levels: `RUST_LOG` names one (`error`, `warn`, `info`, `debug`, `trace` or `off`;
//! `info` when unset or not a level), and containerd's own debug level (it passes `-debug`
//! to `start`, which passes it on to the daemon) raises it to `debug`: the crate's
//! semantics, kept.

use std::{
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt,
    str::FromStr,
    time::SystemTime,
};

use log::{
    kv::{self, VisitSource},
    Level, LevelFilter, Log, Metadata, Record,
};

use crate::RUNTIME_ID;

/// The FIFO containerd reads, in the bundle directory (the daemon's working directory).
pub const LOG_FIFO: &str = "log";

/// The environment variable naming the level, as for the crate's logger.
pub const LOG_ENV: &str = "RUST_LOG";

/// The longest write to a pipe that POSIX guarantees atomic: the longest record.
const MAX_RECORD: usize = libc::PIPE_BUF;

/// Opens the bundle's `log` FIFO, sets the level from `RUST_LOG` and `debug` (containerd's
/// `-debug`), and makes this the `log` crate's logger.
///
/// Fails when there is no FIFO (not in a bundle), no reader on it (containerd is gone), or
/// when a logger is already installed.
pub fn init(debug: bool) -> io::Result<()> {
    let fifo = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(LOG_FIFO)?;
    log::set_boxed_logger(Box::new(FifoLogger { fifo })).map_err(io::Error::other)?;
    log::set_max_level(max_level(std::env::var(LOG_ENV).ok().as_deref(), debug));
    Ok(())
}

/// The level from `RUST_LOG`'s value and containerd's `-debug`: the level named, `info` when
/// none is, and at least `debug` with `-debug`.
pub fn max_level(rust_log: Option<&str>, debug: bool) -> LevelFilter {
    let level = rust_log
        .and_then(|name| LevelFilter::from_str(name).ok())
        .unwrap_or(LevelFilter::Info);
    if debug {
        level.max(LevelFilter::Debug)
    } else {
        level
    }
}

/// The `log` crate's logger: each record, one line, one `write(2)`.
struct FifoLogger {
    /// The write end of the bundle's `log` FIFO, non-blocking.
    fifo: File,
}

impl Log for FifoLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let line = format_record(SystemTime::now(), record);
            // A full pipe (EAGAIN) or no reader (EPIPE): the record is lost, see the module
            // docs. `write` of a whole record or nothing: it is at most `PIPE_BUF`.
            let _ = (&self.fifo).write(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// `record` as one logfmt line, ending in its only newline: `time`, `level`, `msg`, the
/// record's key-value pairs, then `runtime`, in logrus's order (fixed fields first).
fn format_record(now: SystemTime, record: &Record) -> String {
    let mut line = String::with_capacity(128);
    let _ = write!(
        line,
        "time=\"{}\" level={} msg=",
        rfc3339_nanos(now),
        level_name(record.level())
    );
    let mut fields = Fields(String::new());
    let _ = record.key_values().visit(&mut fields);
    let mut tail = fields.0;
    tail.push_str(" runtime=");
    tail.push_str(RUNTIME_ID);
    tail.push('\n');

    let message = record.args().to_string();
    let room = MAX_RECORD.saturating_sub(line.len() + tail.len());
    push_value(&mut line, &message, room);
    line.push_str(&tail);
    line
}

/// logrus's names: `warning`, not `warn`, so that one filter finds containerd's warnings and
/// the shim's.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Collects a record's key-value pairs as ` key=value`.
struct Fields(String);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        self.0.push(' ');
        push_key(&mut self.0, key.as_str());
        self.0.push('=');
        push_value(&mut self.0, &value.to_string(), usize::MAX);
        Ok(())
    }
}

/// True for the characters logrus leaves unquoted (its `needsQuoting`).
fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+')
}

/// Appends a key: a key cannot be quoted, so any other character becomes `_`.
fn push_key(line: &mut String, key: &str) {
    if key.is_empty() {
        line.push('_');
    }
    line.extend(key.chars().map(|c| if is_bare(c) { c } else { '_' }));
}

/// Appends `value` bare or quoted (see the module docs), in at most `room` bytes: a longer
/// value is cut where a whole character (or escape) ends, and ends in `...`.
fn push_value(line: &mut String, value: &str, room: usize) {
    const CUT: &str = "...";
    if !value.is_empty() && value.chars().all(is_bare) {
        // Bare values are ASCII: any byte is a character boundary.
        if value.len() <= room {
            line.push_str(value);
        } else {
            line.push_str(&value[..room.saturating_sub(CUT.len())]);
            line.push_str(CUT);
        }
        return;
    }
    let mut unit = String::new();
    let escaped_len: usize = value
        .chars()
        .map(|c| {
            unit.clear();
            push_escaped(&mut unit, c);
            unit.len()
        })
        .sum();
    line.push('"');
    if escaped_len + 2 <= room {
        value.chars().for_each(|c| push_escaped(line, c));
    } else {
        // Room for the opening quote, what fits, the cut mark and the closing quote.
        let mut left = room.saturating_sub(2 + CUT.len());
        for c in value.chars() {
            unit.clear();
            push_escaped(&mut unit, c);
            if unit.len() > left {
                break;
            }
            left -= unit.len();
            line.push_str(&unit);
        }
        line.push_str(CUT);
    }
    line.push('"');
}

/// Appends `c` as Go's `strconv.Quote` writes it inside the quotes.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{b}' => out.push_str("\\v"),
        '\u{c}' => out.push_str("\\f"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        // C1 controls, and the two separators some viewers break lines at.
        c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => out.push(c),
    }
}

/// `now` in UTC with nanoseconds always nine digits, as containerd's `RFC3339NanoFixed`.
fn rfc3339_nanos(now: SystemTime) -> String {
    let t = time::OffsetDateTime::from(now);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// 2023-11-14T22:13:20.000000005Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_700_000_000, 5)
    }

    fn line(level: Level, message: std::fmt::Arguments) -> String {
        format_record(at(), &Record::builder().level(level).args(message).build())
    }

    const TIME: &str = "time=\"2023-11-14T22:13:20.000000005Z\"";
    const RUNTIME: &str = " runtime=com.example.sample.v2\n";

    #[test]
    fn a_plain_word_stays_bare_and_the_line_ends_in_one_newline() {
        assert_eq!(
            line(Level::Info, format_args!("ok")),
            format!("{TIME} level=info msg=ok{RUNTIME}")
        );
    }

    #[test]
    fn quotes_are_escaped_inside_a_quoted_message() {
        let got = line(
            Level::Info,
            format_args!("Create: executable \"x\" not found in PATH=/bin (INVALID_ARGUMENT)"),
        );
        assert_eq!(
            got,
            format!(
                "{TIME} level=info msg=\"Create: executable \\\"x\\\" not found in \
                 PATH=/bin (INVALID_ARGUMENT)\"{RUNTIME}"
            )
        );
        let got = line(
            Level::Info,
            format_args!("xhung-a: started process 11281 \"\""),
        );
        assert!(
            got.contains(r#" msg="xhung-a: started process 11281 \"\"" "#),
            "{got}"
        );
    }

    #[test]
    fn backslashes_newlines_and_control_characters_are_escaped() {
        let got = line(
            Level::Warn,
            format_args!("a\\b\ttwo\nlines\r\u{1}\u{7f}\u{85}é"),
        );
        assert_eq!(
            got,
            format!(
                "{TIME} level=warning msg=\"a\\\\b\\ttwo\\nlines\\r\\x01\\x7f\\u0085é\"{RUNTIME}"
            )
        );
        assert_eq!(got.matches('\n').count(), 1, "{got}");
    }

    #[test]
    fn an_empty_message_is_an_empty_quoted_value() {
        assert_eq!(
            line(Level::Debug, format_args!("")),
            format!("{TIME} level=debug msg=\"\"{RUNTIME}")
        );
    }

    #[test]
    fn key_value_pairs_follow_the_message() {
        let pairs: &[(&str, &str)] = &[("pid", "42"), ("exec id", "a \"b\""), ("", "x")];
        let record = Record::builder()
            .level(Level::Error)
            .key_values(&pairs)
            .args(format_args!("exit"))
            .build();
        assert_eq!(
            format_record(at(), &record),
            format!("{TIME} level=error msg=exit pid=42 exec_id=\"a \\\"b\\\"\" _=x{RUNTIME}")
        );
    }

    #[test]
    fn a_record_longer_than_pipe_buf_is_cut_to_fit_without_splitting_an_escape() {
        for message in ["a".repeat(10_000), "\"".repeat(10_000), "é\n".repeat(5_000)] {
            let got = line(Level::Info, format_args!("{message}"));
            assert!(got.len() <= MAX_RECORD, "{} bytes", got.len());
            let value = got
                .strip_prefix(&format!("{TIME} level=info msg="))
                .and_then(|rest| rest.strip_suffix(RUNTIME))
                .expect("the fixed fields");
            let kept = value
                .strip_suffix("...\"")
                .or_else(|| value.strip_suffix("..."))
                .unwrap_or_else(|| panic!("no cut mark: {value}"));
            // No dangling backslash before the cut mark: escapes come whole.
            let trailing = kept.len() - kept.trim_end_matches('\\').len();
            assert_eq!(trailing % 2, 0, "{value}");
        }
    }

    #[test]
    fn the_level_follows_rust_log_and_debug_as_the_crate_does() {
        use LevelFilter::*;
        let cases = [
            (None, false, Info),
            (None, true, Debug),
            (Some("error"), false, Error),
            (Some("WARN"), false, Warn),
            (Some("off"), false, Off),
            (Some("trace"), false, Trace),
            (Some("not a level"), false, Info),
            (Some("trace"), true, Trace),
            (Some("info"), true, Debug),
            (Some("off"), true, Debug),
        ];
        for (rust_log, debug, expected) in cases {
            assert_eq!(max_level(rust_log, debug), expected, "{rust_log:?} {debug}");
        }
    }
}
