//! How the demo talks to its reader: narration, colour, a spinner, pauses, or JSON.
//!
//! On a terminal the tour is interactive (Enter moves on) and coloured (unless `NO_COLOR`
//! is set). `--yes` or a non-terminal stdin go straight through. `--json` prints nothing but
//! one JSON object per step on stdout.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use tokio::task::JoinHandle;

/// The reader-facing side of a run.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// Print one JSON object per step instead of prose.
    pub json: bool,
    /// ANSI colours.
    pub color: bool,
    /// Wait for Enter between steps.
    pub interactive: bool,
    /// stdout is a terminal (spinner allowed).
    pub tty: bool,
}

impl Ui {
    /// Works out the mode from the flags and the terminal.
    pub fn new(json: bool, yes: bool) -> Ui {
        let tty = std::io::stdout().is_terminal();
        Ui {
            json,
            color: tty && !json && std::env::var_os("NO_COLOR").is_none(),
            interactive: !yes && !json && tty && std::io::stdin().is_terminal(),
            tty: tty && !json,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn out(&self, text: &str) {
        if !self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
        }
    }

    /// A step's heading.
    pub fn heading(&self, number: usize, total: usize, title: &str) {
        self.out("");
        self.out(&self.paint("1;36", &format!("── Step {number}/{total}: {title}")));
    }

    /// Narration.
    pub fn say(&self, text: &str) {
        self.out(text);
    }

    /// The command-line equivalent of what the step does.
    pub fn command(&self, text: &str) {
        self.out(&self.paint("2", &format!("  $ {text}")));
    }

    /// A block of output (a table, a process tree), indented.
    pub fn block(&self, text: &str) {
        for line in text.lines() {
            self.out(&format!("    {line}"));
        }
    }

    /// What the reader should notice.
    pub fn notice(&self, text: &str) {
        self.out(&format!("{} {text}", self.paint("1;33", "Notice:")));
    }

    /// An expectation that held.
    pub fn ok(&self, text: &str) {
        self.out(&format!("{} {text}", self.paint("1;32", "✓")));
    }

    /// Checks an expectation: prints it as held, or fails with it.
    pub fn check(&self, holds: bool, expectation: &str) -> anyhow::Result<()> {
        if holds {
            self.ok(expectation);
            Ok(())
        } else {
            anyhow::bail!("expected: {expectation}")
        }
    }

    /// An expectation that failed: always shown, on stderr.
    pub fn fail(&self, text: &str) {
        let _ = std::io::stdout().flush();
        eprintln!("{} {text}", self.paint("1;31", "✗"));
    }

    /// Prints one JSON object (JSON mode only).
    pub fn json_line(&self, value: &serde_json::Value) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{value}");
            let _ = stdout.flush();
        }
    }

    /// Waits for Enter when interactive.
    pub async fn pause(&self) {
        if !self.interactive {
            return;
        }
        print!("{}", self.paint("2", "  [Enter] next step "));
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
    }

    /// A spinner with `label` until the returned guard is dropped (terminal only).
    pub fn spinner(&self, label: &str) -> Spinner {
        if !self.tty {
            return Spinner(None);
        }
        let label = label.to_string();
        Spinner(Some(tokio::spawn(async move {
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            for frame in frames.iter().cycle() {
                print!("\r  {frame} {label}");
                let _ = std::io::stdout().flush();
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
        })))
    }
}

/// An error and its causes on one line, like `{:#}`, but each text once: libraries wrap an
/// error in one that displays the same words (tonic's `ConnectError` shows its
/// `io::Error`), and the reader should not see "No such file or directory" twice.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(|cause| cause.to_string()) {
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &cause;
    }
    text
}

/// Stops the spinner and clears its line when dropped.
pub struct Spinner(Option<JoinHandle<()>>);

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Displays what it wraps, as tonic's `ConnectError` does.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = missing.to_string();
        let err = anyhow::Error::new(Wrapper(missing)).context("cannot connect");
        assert_eq!(error_text(&err), format!("cannot connect: {text}"));
    }
}
