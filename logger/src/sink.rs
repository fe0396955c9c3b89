//! Where the lines go: one file, each line stamped with the time and its stream, in the CRI
//! format the kubelet writes (`kubectl logs` reads it) or as docker's `json-file` lines,
//! rotated by size.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `2026-11-30T07:44:42.450435987Z stdout F text`, as the kubelet's CRI logs: `F` for a
    /// full line, `P` for the part of a longer one.
    Cri,
    /// `{"log":"text\n","stream":"stdout","time":"2026-11-30T07:44:42.450435987Z"}`, as
    /// docker's `json-file` driver.
    Json,
}

/// A log file that rotates: at `max_size` bytes, `path` becomes `path.1` (`path.1` becomes
/// `path.2`, ...), keeping `max_files` files in all, and a new `path` starts.
pub struct Sink {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    format: Format,
    /// The last write failed: open the file again before the next.
    broken: bool,
}

impl Sink {
    /// Opens (or creates, with its directory) `path` for appending.
    pub fn open(path: &Path, max_size: u64, max_files: u32, format: Format) -> io::Result<Sink> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Sink {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            format,
            broken: false,
        })
    }

    /// Writes one line of `stream` (`stdout`, `stderr`); `full` is false for the part of a
    /// line longer than the reader's buffer. `text` has no newline.
    ///
    /// A line that cannot be written (a full disk, a file moved away) is dropped, said once
    /// on stderr, and the file is opened again for the next: the logger goes on reading, so
    /// the task never blocks or dies of SIGPIPE because its log cannot be written.
    pub fn line(&mut self, stream: &str, text: &[u8], full: bool, now: SystemTime) {
        let record = record(self.format, stream, text, full, now);
        let written = (|| {
            if self.size > 0 && self.size + record.len() as u64 > self.max_size {
                self.rotate()?;
            }
            if self.broken {
                self.file = open_append(&self.path)?;
                self.size = self.file.metadata()?.len();
                self.broken = false;
            }
            self.file.write_all(&record)?;
            self.size += record.len() as u64;
            Ok::<(), io::Error>(())
        })();
        if let Err(err) = written {
            if !self.broken {
                eprintln!(
                    "sample-logger: {}: {err}; dropping lines until it works",
                    self.path.display()
                );
            }
            self.broken = true;
        }
    }

    /// `path.N-1` → `path.N`, ..., `path` → `path.1`; then a new, empty `path`.
    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files > 1 {
            for n in (1..self.max_files - 1).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

/// One line as the format writes it, newline included.
pub fn record(format: Format, stream: &str, text: &[u8], full: bool, now: SystemTime) -> Vec<u8> {
    let time = rfc3339_nanos(now);
    let mut out = Vec::with_capacity(text.len() + 64);
    match format {
        Format::Cri => {
            let tag = if full { "F" } else { "P" };
            out.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
            out.extend_from_slice(text);
        }
        Format::Json => {
            out.extend_from_slice(b"{\"log\":\"");
            json_escape(text, &mut out);
            if full {
                out.extend_from_slice(b"\\n");
            }
            out.extend_from_slice(
                format!("\",\"stream\":\"{stream}\",\"time\":\"{time}\"}}").as_bytes(),
            );
        }
    }
    out.push(b'\n');
    out
}

/// `text` as the inside of a JSON string (invalid UTF-8 becomes U+FFFD).
fn json_escape(text: &[u8], out: &mut Vec<u8>) {
    for c in String::from_utf8_lossy(text).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// `now` in UTC as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn rfc3339_nanos(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_are_utc_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_nanos(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(at(1_796_024_682, 450_435_987)),
            "2026-11-30T07:44:42.450435987Z"
        );
        // A leap day.
        assert_eq!(
            rfc3339_nanos(at(951_782_400, 1)),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn records_in_both_formats() {
        let now = at(0, 5);
        assert_eq!(
            record(Format::Cri, "stdout", b"hello", true, now),
            b"1970-01-01T00:00:00.000000005Z stdout F hello\n"
        );
        assert_eq!(
            record(Format::Cri, "stderr", b"part", false, now),
            b"1970-01-01T00:00:00.000000005Z stderr P part\n"
        );
        assert_eq!(
            String::from_utf8(record(Format::Json, "stdout", b"a \"q\"\t\x01", true, now)).unwrap(),
            "{\"log\":\"a \\\"q\\\"\\t\\u0001\\n\",\"stream\":\"stdout\",\"time\":\"1970-01-01T00:00:00.000000005Z\"}\n"
        );
    }

    #[test]
    fn the_file_rotates_by_size_keeping_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/app.log");
        let mut sink = Sink::open(&path, 100, 3, Format::Cri).expect("open");
        for i in 0..10 {
            sink.line("stdout", format!("line {i}").as_bytes(), true, at(0, 0));
        }
        // 46 bytes a record, 2 per file: app.log has the last two, .1 and .2 the two before.
        let read = |name: &str| fs::read_to_string(dir.path().join("logs").join(name)).unwrap();
        assert!(read("app.log").ends_with("stdout F line 9\n"));
        assert_eq!(read("app.log").lines().count(), 2);
        assert!(read("app.log.1").ends_with("line 7\n"));
        assert!(read("app.log.2").ends_with("line 5\n"));
        assert!(!dir.path().join("logs/app.log.3").exists());
    }
}
