//! Latency through `ctr`: a call timed, and events stamped with the moment they arrived.
//!
//! The figures are only ever compared with a baseline taken in the same run (the same call
//! with nothing in the way, or containerd's runc-v2 shim doing the same), never with a
//! fixed number: these machines are noisy.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// `f`'s result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// `lines`, each with the moment it arrived: a thread receives them as they come, so that
/// a test busy waiting for a `ctr` command does not delay the timestamp.
pub fn stamped(lines: mpsc::Receiver<String>) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in lines {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// When the first event line satisfying `pred` arrived, waiting at most `limit`.
pub fn arrival(
    lines: &mpsc::Receiver<(Instant, String)>,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match lines.recv_timeout(left) {
            Ok((at, line)) if pred(&line) => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The median of `values` (the upper one of an even count); zero for none.
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
