//! What the tests read of a task's cgroup, on cgroup v1 (this machine) and v2 (GitHub's
//! runners) alike: each figure from the file its version keeps it in.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Whether the machine has cgroup v2 only (no v1 memory hierarchy).
pub fn v2() -> bool {
    !Path::new("/sys/fs/cgroup/memory").is_dir()
}

/// Where the cgroup2 hierarchy is mounted: `/sys/fs/cgroup` on a v2 machine, the hybrid
/// layout's `unified` mount beside the v1 hierarchies; `None` without one.
pub fn v2_mount() -> Option<PathBuf> {
    if v2() {
        return Some(PathBuf::from("/sys/fs/cgroup"));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (fields, after) = line.split_once(" - ")?;
        let point = fields.split(' ').nth(4)?;
        (after.split(' ').next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// The cgroup paths `pid` is in (`/proc/<pid>/cgroup`, every hierarchy).
pub fn of_process(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
        .collect()
}

/// The roots of every cgroup hierarchy of the machine: each v1 hierarchy's and the
/// cgroup2 mount (on a v2 machine, `/sys/fs/cgroup` alone).
pub fn hierarchies() -> Vec<PathBuf> {
    if v2() {
        return vec![PathBuf::from("/sys/fs/cgroup")];
    }
    let mut roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|root| root.join("cgroup.procs").exists())
        .collect();
    roots.sort();
    roots
}

/// Makes cgroup directory `dir` as a kubelet does, with its parents; in a v1 cpuset
/// hierarchy each new level gets its parent's CPUs and memory nodes (the kernel leaves
/// them empty).
pub fn make(dir: &Path) {
    let mut at = PathBuf::from("/");
    for part in dir.components().skip(1) {
        let parent = at.clone();
        at.push(part);
        if !at.exists() {
            fs::create_dir(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = at.join(file);
            if own.exists()
                && fs::read_to_string(&own)
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
            {
                let inherited = fs::read_to_string(parent.join(file)).unwrap_or_default();
                fs::write(&own, inherited.trim())
                    .unwrap_or_else(|e| panic!("{}: {e}", own.display()));
            }
        }
    }
}

/// How many CPUs are online (`cpuset.cpus` of the root: `0-1` here).
pub fn cpus_online() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The directory of cgroup `path` that holds `controller`'s files.
pub fn dir(controller: &str, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if v2() {
        Path::new("/sys/fs/cgroup").join(relative)
    } else {
        Path::new("/sys/fs/cgroup").join(controller).join(relative)
    }
}

/// The text of `controller`'s `file` of cgroup `path`.
pub fn read(controller: &str, path: &str, file: &str) -> String {
    let file = dir(controller, path).join(file);
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The first number of `controller`'s `file` of cgroup `path` (`max` is `u64::MAX`).
pub fn number(controller: &str, path: &str, file: &str) -> u64 {
    let text = read(controller, path, file);
    match text.split_whitespace().next() {
        Some("max") => u64::MAX,
        Some(n) => n
            .parse()
            .unwrap_or_else(|e| panic!("{file}: {text:?}: {e}")),
        None => panic!("{file} is empty"),
    }
}

/// The value of `key` in a `key value` file.
fn key(controller: &str, path: &str, file: &str, key: &str) -> u64 {
    read(controller, path, file)
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {file}"))
}

/// The memory limit in bytes.
pub fn memory_limit(path: &str) -> u64 {
    let file = if v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    number("memory", path, file)
}

/// The memory in use, in bytes.
pub fn memory_usage(path: &str) -> u64 {
    let file = if v2() {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    number("memory", path, file)
}

/// The CPU quota per period, in microseconds (`u64::MAX`: none).
pub fn cpu_quota(path: &str) -> u64 {
    if v2() {
        number("cpu", path, "cpu.max")
    } else {
        number("cpu", path, "cpu.cfs_quota_us")
    }
}

/// The CPU time used, in nanoseconds.
pub fn cpu_usage_ns(path: &str) -> u64 {
    if v2() {
        key("cpu", path, "cpu.stat", "usage_usec") * 1000
    } else {
        number("cpuacct", path, "cpuacct.usage")
    }
}

/// The process limit (`u64::MAX`: none).
pub fn pids_limit(path: &str) -> u64 {
    number("pids", path, "pids.max")
}

/// How many processes are in it.
pub fn pids_current(path: &str) -> u64 {
    number("pids", path, "pids.current")
}

/// Whether the kernel says every process in it is frozen.
pub fn frozen(path: &str) -> bool {
    if v2() {
        key("freezer", path, "cgroup.events", "frozen") == 1
    } else {
        read("freezer", path, "freezer.state").trim() == "FROZEN"
    }
}
