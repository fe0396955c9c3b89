//! The shim and its task as `ps -o ppid,pid,pgid,sid,args --forest` shows them, read from
//! `/proc`.

use std::fs;

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// Command line (or `[comm]` when it has none, like a zombie).
    pub command: String,
}

/// Reads one process, if it exists.
pub fn read(pid: i32) -> Option<Row> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Row {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        command: if args.is_empty() {
            format!("[{comm}]")
        } else {
            args.join(" ")
        },
    })
}

/// The cgroup `pid` is in, as `/proc/<pid>/cgroup` says: the memory controller's path on
/// cgroup v1, the unified path on v2.
pub fn cgroup(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = |line: &str| line.splitn(3, ':').nth(2).map(str::to_string);
    text.lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .or_else(|| text.lines().find(|l| l.starts_with("0::")))
        .and_then(path)
}

/// `root` and all its descendants, parents first, with their depth below `root`.
pub fn tree(root: i32) -> Vec<(usize, Row)> {
    let all: Vec<Row> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(read)
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(row) = read(root) {
        walk(&all, row, 0, &mut out);
    }
    out
}

fn walk(all: &[Row], row: Row, depth: usize, out: &mut Vec<(usize, Row)>) {
    let pid = row.pid;
    out.push((depth, row));
    let mut children: Vec<&Row> = all
        .iter()
        .filter(|r| r.ppid == pid && r.pid != pid)
        .collect();
    children.sort_by_key(|r| r.pid);
    for child in children {
        walk(all, child.clone(), depth + 1, out);
    }
}

/// Renders rows as `ps -o ppid,pid,pgid,sid,args --forest` does: PPID, PID, PGID, SID, then
/// the indented command.
pub fn render(rows: &[(usize, Row)], width: usize) -> String {
    let mut text = format!(
        "{:>7} {:>7} {:>7} {:>7}  COMMAND\n",
        "PPID", "PID", "PGID", "SID"
    );
    for (depth, row) in rows {
        let indent = if *depth == 0 {
            String::new()
        } else {
            format!("{}\\_ ", "    ".repeat(depth - 1))
        };
        let mut command = format!("{indent}{}", row.command);
        if command.chars().count() > width {
            command = command
                .chars()
                .take(width.saturating_sub(3))
                .collect::<String>()
                + "...";
        }
        text += &format!(
            "{:>7} {:>7} {:>7} {:>7}  {command}\n",
            row.ppid, row.pid, row.pgid, row.sid
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_readable_and_renders() {
        let me = std::process::id() as i32;
        let row = read(me).expect("own row");
        assert_eq!(row.pid, me);
        let text = render(&[(0, row.clone()), (1, row)], 40);
        assert!(text.starts_with("   PPID     PID"));
        assert!(text.contains("\\_ "));
    }
}
