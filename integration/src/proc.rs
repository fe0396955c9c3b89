//! Just enough of `/proc` for the tests to check the process tree the shim builds.

use std::fs;

/// Every pid currently in `/proc`.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `(state, ppid, pgid, sid)` from `/proc/<pid>/stat`, if the process exists.
pub fn stat(pid: i32) -> Option<(char, i32, i32, i32)> {
    let line = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = line
        .get(line.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some((
        rest.first()?.chars().next()?,
        rest.get(1)?.parse().ok()?,
        rest.get(2)?.parse().ok()?,
        rest.get(3)?.parse().ok()?,
    ))
}

/// True while the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, ..)| state != 'Z')
}

/// The parent pid.
pub fn ppid(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.1)
}

/// The process group id.
pub fn pgid(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.2)
}

/// The session id.
pub fn sid(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.3)
}

/// The command name (`comm`).
pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The argument vector.
pub fn cmdline(pid: i32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/cmdline"))
}

/// The environment it was started with (`/proc/<pid>/environ`: root reads anyone's).
pub fn environ(pid: i32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/environ"))
}

/// The non-empty NUL-separated strings of a `/proc` file (empty if unreadable).
fn nul_separated(path: &str) -> Vec<String> {
    fs::read(path)
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children, zombies included.
pub fn children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| ppid(p) == Some(pid))
        .collect()
}

/// All descendants, zombies included.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children(parent) {
            queue.push(child);
            found.push(child);
        }
    }
    found
}

/// The value of `field` in `/proc/<pid>/status` (`Cpus_allowed_list`), trimmed.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}
