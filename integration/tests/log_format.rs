//! The shim's own records in containerd's log: one well-formed logfmt line each.
//!
//! containerd copies the bundle's `log` FIFO to its stderr byte for byte (`io.Copy` in
//! `runtime/v2/binary.go`), so what a shim record looks like in containerd's log is the
//! shim's doing alone (see `shim/src/logfmt.rs`). containerd's own lines are logrus's
//! logfmt; the shim's must be too, told apart by their `runtime` field, as the Go shims'.

use std::time::Duration;

use integration::{poll_until, stderr, Containerd, RUNTIME};

/// A program name with a quote and a backslash: the shim's `Create` fails on it, and logs
/// `Create: executable "no\"such\\exe" not found in PATH=... (INVALID_ARGUMENT)`, which
/// quotes the name with Rust's `{:?}`, so the record holds quotes and backslashes.
const BAD_PROGRAM: &str = r#"no"such\exe"#;

#[test]
fn every_line_is_logfmt_and_the_shims_records_are_escaped_and_not_followed_by_empty_lines() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    // A task that runs and goes: the shim logs its start, `<id>: started process <pid> ""`
    // (the init's exec id is empty), and with the harness's debug-level daemon (`-debug`)
    // a debug record per RPC.
    let out = cd.run_rm("fine", &["true"]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    // A Create that fails, and its shim that exits.
    let out = cd.run_rm("missing", &[BAD_PROGRAM]);
    assert!(!out.status.success(), "ctr run {BAD_PROGRAM:?} succeeded");
    cd.wait_shims_gone();

    // The shim's records reach the log through containerd's copy: wait for the one this
    // test is about, however it is written.
    poll_until(
        Duration::from_secs(10),
        "the failed Create's record in containerd's log",
        || cd.log().contains("Create: executable").then_some(()),
    );

    // Each line parses as logfmt, containerd's and the shim's: a quote left unescaped in a
    // message ends its value early, and what follows does not parse.
    let log = cd.log();
    let malformed: Vec<(usize, &str, String)> = log
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .filter_map(|(n, line)| parse(line).err().map(|err| (n + 1, line, err)))
        .collect();
    assert!(
        malformed.is_empty(),
        "{} lines of containerd's log are not logfmt, first ones:\n{:#?}",
        malformed.len(),
        &malformed[..malformed.len().min(5)]
    );
    // No empty line: containerd writes none, and a shim record is a line, not two.
    let empty: Vec<usize> = log
        .lines()
        .enumerate()
        .filter(|(_, line)| line.is_empty())
        .map(|(n, _)| n + 1)
        .collect();
    assert!(
        empty.is_empty(),
        "{} empty lines in containerd's log (lines {:?}...)",
        empty.len(),
        &empty[..empty.len().min(10)]
    );

    // The shim's records: `time`, `level`, `msg` first, as logrus writes them, and the
    // failed Create's message read back as the shim wrote it.
    let records = shim_records(&log);
    for record in &records {
        let keys: Vec<&str> = record.0.iter().take(3).map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["time", "level", "msg"], "{record:?}");
    }
    let expected = format!("Create: executable {BAD_PROGRAM:?} not found in PATH=");
    let failed = records
        .iter()
        .find(|r| r.msg().starts_with(&expected))
        .unwrap_or_else(|| panic!("no shim record starts with {expected:?}:\n{records:#?}"));
    assert!(
        failed.msg().ends_with("(INVALID_ARGUMENT)") && failed.get("level") == Some("info"),
        "{failed:?}"
    );
    // containerd's `-debug` reached the shim.
    assert!(
        records.iter().any(|r| r.get("level") == Some("debug")),
        "no debug record from the shim, though containerd logs at debug level:\n{records:#?}"
    );
}

/// One log line's fields, in order, with their values unquoted.
#[derive(Debug)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn msg(&self) -> &str {
        self.get("msg").unwrap_or_default()
    }
}

/// The shim's records in `log`: the lines that parse and carry `runtime=<our runtime>`.
fn shim_records(log: &str) -> Vec<Fields> {
    log.lines()
        .filter_map(|line| parse(line).ok())
        .filter(|fields| fields.get("runtime") == Some(RUNTIME))
        .collect()
}

/// Parses a logfmt line as logrus writes one: `key=value` pairs separated by one space; a
/// value bare (no space, quote or `=`) or quoted as Go's `%q`.
fn parse(line: &str) -> Result<Fields, String> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        if !fields.is_empty() {
            rest = rest
                .strip_prefix(' ')
                .ok_or_else(|| format!("no space before {rest:?}"))?;
        }
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("no `=` in {rest:?}"))?;
        if key.is_empty() || key.contains([' ', '"']) {
            return Err(format!("bad key {key:?}"));
        }
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                let value = &after[..end];
                if value.contains(['"', '=']) {
                    return Err(format!("bad bare value {value:?}"));
                }
                (value.to_string(), &after[end..])
            }
        };
        if !(after.is_empty() || after.starts_with(' ')) {
            return Err(format!("{after:?} right after the value of {key}"));
        }
        fields.push((key.to_string(), value));
        rest = after;
    }
    Ok(Fields(fields))
}

/// Reads a Go-quoted string's content up to its closing quote: the value, and what follows.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => {
                let escaped = match chars.next().map(|(_, c)| c) {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('a') => '\u{7}',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('v') => '\u{b}',
                    Some(kind @ ('x' | 'u' | 'U')) => {
                        let digits = match kind {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.by_ref().take(digits).map(|(_, c)| c).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad escape \\{kind}{hex}"))?
                    }
                    other => return Err(format!("bad escape \\{other:?}")),
                };
                value.push(escaped);
            }
            c if c.is_control() => return Err(format!("raw control character {c:?}")),
            c => value.push(c),
        }
    }
    Err(format!("unterminated quoted value {s:?}"))
}

/// The parser itself, on lines from containerd's log: what the crate's logger wrote before
/// `logfmt.rs` is refused, logrus's lines and ours are read back.
#[test]
fn the_parser_refuses_unescaped_quotes_and_reads_escapes_back() {
    for bad in [
        r#"time="2024-05-01T10:00:00Z" level=info msg="Create: executable "x" not found in PATH=/bin (INVALID_ARGUMENT)""#,
        r#"time="2024-05-01T10:00:00Z" level=info msg="xhung-a: started process 11281 """"#,
        r#"level=info msg="unterminated"#,
        r#"level=info msg=two words"#,
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let containerd =
        r#"time="2024-05-01T10:00:00.000000001+02:00" level=info msg="shim disconnected" id=t1"#;
    let fields = parse(containerd).expect("logrus's line");
    assert_eq!(fields.msg(), "shim disconnected");
    assert_eq!(fields.get("id"), Some("t1"));
    let ours = r#"time="2024-05-01T10:00:00.000000001Z" level=info msg="a \"b\" c\\d\ne\x01" runtime=com.example.sample.v2"#;
    let fields = parse(ours).expect("our line");
    assert_eq!(fields.msg(), "a \"b\" c\\d\ne\u{1}");
    assert_eq!(fields.get("runtime"), Some(RUNTIME));
}
