//! Signal names and numbers, as `ctr task kill --signal` takes them.

use anyhow::{bail, Result};

const NAMES: [(&str, i32); 12] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("WINCH", libc::SIGWINCH),
];

/// Parses `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse(text: &str) -> Result<u32> {
    if let Ok(number) = text.parse::<u32>() {
        return Ok(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    match NAMES.iter().find(|(n, _)| *n == name) {
        Some((_, number)) => Ok(*number as u32),
        None => bail!("unknown signal {text:?} (use a number or a name such as SIGTERM)"),
    }
}

/// The name of a signal number, for narration (`15` is `SIGTERM`).
pub fn name(number: u32) -> String {
    NAMES
        .iter()
        .find(|(_, n)| *n as u32 == number)
        .map_or_else(|| format!("signal {number}"), |(n, _)| format!("SIG{n}"))
}

/// Explains an exit code the way the Go sample's README does: `143 = 128 + 15 (SIGTERM)`.
pub fn explain_exit(code: u32) -> String {
    if code > 128 && code <= 128 + 64 {
        format!("{code} = 128 + {} ({})", code - 128, name(code - 128))
    } else {
        format!("{code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_explanations() {
        assert_eq!(parse("SIGTERM").unwrap(), 15);
        assert_eq!(parse("int").unwrap(), 2);
        assert_eq!(parse("9").unwrap(), 9);
        assert!(parse("SIGNOPE").is_err());
        assert_eq!(explain_exit(143), "143 = 128 + 15 (SIGTERM)");
        assert_eq!(explain_exit(130), "130 = 128 + 2 (SIGINT)");
        assert_eq!(explain_exit(7), "7");
    }
}
