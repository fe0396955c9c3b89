//! What the shim learns about processes from `/proc`.
//!
//! The shim runs host processes without a cgroup or pid namespace, so "every process of the
//! task" has to be worked out from the process tree: the tasks are the shim's descendants
//! (`model/host/members.rs` tells which are whose when the shim serves a pod). The shim is their *child
//! subreaper* (`PR_SET_CHILD_SUBREAPER`), so a process whose parent dies is re-parented to
//! the shim instead of to pid 1 and stays in the tree.

use std::{collections::HashMap, fs, io};

/// The fields of `/proc/<pid>/stat` the shim uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// The command name (truncated to 15 bytes by the kernel).
    pub comm: String,
    /// One-letter state: `R`, `S`, `Z` (zombie: exited, not yet reaped) and so on.
    pub state: char,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// CPU time in user mode, in clock ticks (`sys::clock_ticks` per second).
    pub user_ticks: u64,
    /// CPU time in kernel mode, in clock ticks.
    pub kernel_ticks: u64,
    /// Start time in clock ticks since boot: with the pid it names a process uniquely, since
    /// a recycled pid has a later start time.
    pub start_time: u64,
    /// Resident set size, in pages (`sys::page_size` bytes).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Reads `/proc/<pid>/stat`.
    pub fn read(pid: i32) -> io::Result<ProcStat> {
        let line = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        parse_stat(&line).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unreadable /proc/{pid}/stat"),
            )
        })
    }
}

/// Parses one `/proc/<pid>/stat` line. `comm` is in parentheses and may itself contain
/// spaces and parentheses, so the fields after it are found from the *last* `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let pid = line[..open].trim().parse().ok()?;
    let comm = line.get(open + 1..close)?.to_string();
    // Fields from 3 (state) on, so index 0 is field 3.
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    Some(ProcStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgid: rest.get(2)?.parse().ok()?,
        sid: rest.get(3)?.parse().ok()?,
        user_ticks: rest.get(11)?.parse().ok()?,
        kernel_ticks: rest.get(12)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
        rss_pages: rest.get(21)?.parse().ok()?,
    })
}

/// Every process on the host that `/proc` shows right now. Processes that exit while the
/// directory is read are skipped.
pub fn all_processes() -> io::Result<Vec<ProcStat>> {
    let mut processes = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(stat) = ProcStat::read(pid) {
            processes.push(stat);
        }
    }
    Ok(processes)
}

/// The descendants of `root` (not `root` itself), parents before children: the quick way.
///
/// Walks the kernel's per-thread `children` lists (`/proc/<pid>/task/<tid>/children`),
/// which costs a few reads instead of one per process on the host; where the kernel lacks
/// them (`CONFIG_PROC_CHILDREN`), scans all of `/proc`.
///
/// proc(5) calls those lists reliable only while the children are stopped or frozen: a
/// child that exits while its parent's list is read can hide its siblings. Good enough to
/// list or measure a task; where missing a process matters (killing what is left of a
/// task), [`descendants_exhaustive`] has the last word.
pub fn descendants(root: i32) -> io::Result<Vec<ProcStat>> {
    match descendants_via_children(root) {
        Some(found) => Ok(found),
        None => descendants_exhaustive(root),
    }
}

/// The descendants of `root` from one pass over every process in `/proc`, linked by their
/// parent pids: slower, but it cannot miss a process that exists for the whole pass.
pub fn descendants_exhaustive(root: i32) -> io::Result<Vec<ProcStat>> {
    Ok(descendants_in(all_processes()?, root))
}

/// The children of `pid` according to its threads' `children` files; `None` when the
/// kernel does not provide them.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let mut children = Vec::new();
    let threads = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for thread in threads.flatten() {
        let list = match fs::read_to_string(thread.path().join("children")) {
            Ok(list) => list,
            Err(err) if err.kind() == io::ErrorKind::NotFound && children.is_empty() => {
                // Either the thread just exited or the kernel has no such file.
                if !thread.path().exists() {
                    continue;
                }
                return None;
            }
            Err(_) => continue,
        };
        children.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(children)
}

fn descendants_via_children(root: i32) -> Option<Vec<ProcStat>> {
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        let children = match children_of(parent) {
            Some(children) => children,
            None if parent == root => return None,
            None => continue,
        };
        for child in children {
            // A child that exited meanwhile has no stat any more: nothing to report.
            if let Ok(stat) = ProcStat::read(child) {
                queue.push(child);
                found.push(stat);
            }
        }
    }
    Some(found)
}

/// [`descendants`] over a given process list, for testing without a live tree.
pub fn descendants_in(processes: Vec<ProcStat>, root: i32) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    for stat in processes {
        children.entry(stat.ppid).or_default().push(stat);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for child in children.remove(&parent).unwrap_or_default() {
            queue.push(child.pid);
            found.push(child);
        }
    }
    found
}

// A unit test's process has no reaper of its own: the test waits for its children.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn stat(pid: i32, ppid: i32) -> ProcStat {
        ProcStat {
            pid,
            comm: format!("p{pid}"),
            state: 'S',
            ppid,
            pgid: pid,
            sid: pid,
            user_ticks: 0,
            kernel_ticks: 0,
            start_time: 1,
            rss_pages: 0,
        }
    }

    #[test]
    fn parses_a_stat_line_whose_command_has_spaces_and_parentheses() {
        let line = "4242 (we (ird) name) S 17 4242 17 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "we (ird) name");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.pgid, 4242);
        assert_eq!(stat.sid, 17);
        assert_eq!((stat.user_ticks, stat.kernel_ticks), (1, 2));
        assert_eq!(stat.start_time, 987654);
        assert_eq!(stat.rss_pages, 200);
    }

    #[test]
    fn rejects_truncated_lines() {
        assert_eq!(parse_stat("12 (sh) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = ProcStat::read(std::process::id() as i32).expect("own stat");
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
    }

    #[test]
    fn the_fast_walk_finds_a_real_grandchild() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let me = std::process::id() as i32;
        let mut found = Vec::new();
        for _ in 0..100 {
            found = descendants(me).expect("descendants");
            if found.iter().any(|p| p.comm == "sleep") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        crate::sys::signal_group(child.id() as i32, crate::sys::Signal::KILL).expect("killpg");
        let _ = child.wait();
        assert!(
            found.iter().any(|p| p.pid == child.id() as i32),
            "{found:?}"
        );
        assert!(found.iter().any(|p| p.comm == "sleep"), "{found:?}");
    }

    #[test]
    fn descendants_walk_the_whole_tree_and_nothing_else() {
        let tree = vec![
            stat(10, 1),
            stat(11, 10),
            stat(12, 11),
            stat(13, 10),
            stat(20, 1),
        ];
        let mut pids: Vec<i32> = descendants_in(tree, 10).iter().map(|s| s.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![11, 12, 13]);
    }
}
