//! cgroups, read and written through cgroupfs: where a task's processes live, their
//! limits, their freezer, their OOM kills. (`metrics.rs` reads their figures, `oom.rs`
//! waits for their OOM notifications.)
//!
//! Two layouts exist. **cgroup v1** mounts one hierarchy per controller
//! (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu`, ...), and a task's cgroup is the same
//! path in each. **cgroup v2** mounts one unified hierarchy (`/sys/fs/cgroup`), where a
//! parent must enable a controller for its children (`cgroup.subtree_control`). A *hybrid*
//! machine has v1 controllers and an empty cgroup2 beside them (at `/sys/fs/cgroup/unified`):
//! the controllers are v1's, so it counts as v1.
//!
//! Every function takes the hierarchy's root directories, so the tests run against a tree
//! of plain files in a temporary directory.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// The v1 controllers a task's cgroup is made in.
pub const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// The v2 controllers a task's cgroup asks its parents for.
pub const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Which cgroup layout the machine has, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller: controller name to mount point.
    V1(BTreeMap<String, PathBuf>),
    /// The unified hierarchy's mount point.
    V2(PathBuf),
}

impl Hierarchy {
    /// The layout `/proc/self/mountinfo` describes, if any cgroup is mounted.
    pub fn detect() -> Option<Hierarchy> {
        Hierarchy::from_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?)
    }

    /// The layout a `mountinfo` text describes: v1 when any v1 controller is mounted
    /// (hybrid machines included), else v2 when a cgroup2 is mounted.
    pub fn from_mountinfo(text: &str) -> Option<Hierarchy> {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in text.lines() {
            // `... <mount point> <options> [optional fields] - <fs type> <source> <super options>`
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(PathBuf::from);
            let mut right = right.split(' ');
            let (fs_type, super_options) = (right.next(), right.nth(1));
            match (fs_type, mount_point) {
                (Some("cgroup"), Some(point)) => {
                    for option in super_options.unwrap_or_default().split(',') {
                        if V1_CONTROLLERS.contains(&option) {
                            v1.insert(option.to_string(), point.clone());
                        }
                    }
                }
                (Some("cgroup2"), Some(point)) => v2 = v2.or(Some(point)),
                _ => {}
            }
        }
        if !v1.is_empty() {
            Some(Hierarchy::V1(v1))
        } else {
            v2.map(Hierarchy::V2)
        }
    }
}

/// The cgroup a spec's `linux.cgroupsPath` names, as a path below the hierarchy's root.
///
/// - `/a/b`: that path (containerd's `ctr` gives `/<namespace>/<id>`, its CRI plugin with
///   the cgroupfs driver `/kubepods/.../<id>`);
/// - `slice:prefix:name` (systemd's form, the CRI plugin with `SystemdCgroup`): the path
///   systemd itself would give the unit, as runc's systemd driver asks for it:
///   `a-b.slice` expands to `/a.slice/a-b.slice`, the unit is `prefix-name.scope` in it.
///   The shim writes it through cgroupfs; it does not ask systemd;
/// - a relative path: below the root, as an absolute one;
/// - empty: no cgroup (`None`).
///
/// `..` is refused: the shim runs as root and must not be pointed outside the hierarchy.
pub fn cgroup_path(cgroups_path: &str) -> Result<Option<PathBuf>> {
    if cgroups_path.is_empty() {
        return Ok(None);
    }
    let invalid =
        |why: &str| Error::InvalidArgument(format!("linux.cgroupsPath {cgroups_path:?}: {why}"));
    let path = if !cgroups_path.starts_with('/') && cgroups_path.matches(':').count() == 2 {
        let mut parts = cgroups_path.splitn(3, ':');
        let (slice, prefix, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if name.is_empty() {
            return Err(invalid("systemd form `slice:prefix:name` without a name"));
        }
        let mut path = expand_slice(if slice.is_empty() {
            "system.slice"
        } else {
            slice
        })
        .ok_or_else(|| invalid("not a valid systemd slice name"))?;
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        path.push(unit);
        path
    } else {
        Path::new("/").join(cgroups_path.trim_start_matches('/'))
    };
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(invalid("`..` is not allowed"));
    }
    if !path
        .components()
        .any(|c| matches!(c, std::path::Component::Normal(_)))
    {
        // The root cgroup holds every process of the machine: the shim kills what is in a
        // task's cgroup when the task ends.
        return Err(invalid("the root cgroup cannot be a task's"));
    }
    Ok(Some(path))
}

/// `a-b-c.slice` as systemd nests it: `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the
/// root.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let stem = slice.strip_suffix(".slice")?;
    let mut path = PathBuf::from("/");
    if stem == "-" {
        return Some(path);
    }
    if stem.is_empty() || stem.contains('/') || stem.starts_with('-') || stem.ends_with('-') {
        return None;
    }
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return None;
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Some(path)
}

/// A task's cgroup: `path` below each directory of `dirs` (one per v1 controller, or the
/// unified root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The hierarchy it is in.
    pub hierarchy: Hierarchy,
    /// Its path below the hierarchy's root(s).
    pub path: PathBuf,
}

impl Cgroup {
    /// Its directories: one per v1 controller, or one.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let relative = self.path.strip_prefix("/").unwrap_or(&self.path);
        match &self.hierarchy {
            Hierarchy::V1(mounts) => mounts.values().map(|m| m.join(relative)).collect(),
            Hierarchy::V2(root) => vec![root.join(relative)],
        }
    }

    /// Makes the cgroup (and its parents). On v2 each parent also enables, for its
    /// children, the controllers it has of [`V2_CONTROLLERS`].
    pub fn create(&self) -> io::Result<()> {
        if let Hierarchy::V2(root) = &self.hierarchy {
            let mut dir = root.clone();
            for part in self.path.components().skip(1) {
                enable_controllers(&dir)?;
                dir.push(part);
                if !dir.is_dir() {
                    fs::create_dir(&dir)?;
                }
            }
            return Ok(());
        }
        for dir in self.dirs() {
            fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup (every v1 controller's, or the unified one).
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for dir in self.dirs() {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// The pids in the cgroup (from the first directory: on v1 every controller's holds
    /// the same processes).
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        let Some(dir) = self.dirs().into_iter().next() else {
            return Ok(Vec::new());
        };
        Ok(fs::read_to_string(dir.join("cgroup.procs"))?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Removes the cgroup's directories (the kernel refuses while a process is in it).
    /// Cgroups the task made below its own (a nested runtime, systemd in a container) go
    /// first; every directory is tried, the first failure is returned.
    pub fn remove(&self) -> io::Result<()> {
        let mut result = Ok(());
        for dir in self.dirs() {
            if let Err(err) = remove_tree(&dir) {
                result = result.and(Err(err));
            }
        }
        result
    }

    /// The pids in the cgroup and in the cgroups below it.
    pub fn all_procs(&self) -> Vec<i32> {
        fn walk(dir: &Path, pids: &mut Vec<i32>) {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), pids);
                }
            }
        }
        let mut pids = Vec::new();
        for dir in self.dirs() {
            walk(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether it is a cgroup v2 (unified) one.
    pub fn is_v2(&self) -> bool {
        matches!(self.hierarchy, Hierarchy::V2(_))
    }

    /// The directory with `controller`'s files: on v1 that controller's hierarchy (`None`
    /// when not mounted), on v2 the one directory.
    pub fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        let relative = self.path.strip_prefix("/").unwrap_or(&self.path);
        match &self.hierarchy {
            Hierarchy::V1(mounts) => mounts.get(controller).map(|m| m.join(relative)),
            Hierarchy::V2(root) => Some(root.join(relative)),
        }
    }

    /// The text of `controller`'s `file` (`NotFound` when the controller is not there).
    pub fn read(&self, controller: &str, file: &str) -> io::Result<String> {
        let dir = self.dir_of(controller).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the {controller} controller is not mounted"),
            )
        })?;
        fs::read_to_string(dir.join(file))
    }

    /// The file a freezer state is written to and read from: v1's `freezer.state`, v2's
    /// `cgroup.freeze` (with `cgroup.events` saying when it took effect).
    fn freezer_file(&self) -> Option<PathBuf> {
        let file = if self.is_v2() {
            "cgroup.freeze"
        } else {
            "freezer.state"
        };
        let path = self.dir_of("freezer")?.join(file);
        path.exists().then_some(path)
    }

    /// Whether the cgroup has a freezer (v2 always; v1 when the controller is mounted).
    pub fn can_freeze(&self) -> bool {
        self.freezer_file().is_some()
    }

    /// Asks the kernel to freeze (or thaw) every process in the cgroup. Freezing takes
    /// effect once [`Cgroup::is_frozen`] says so.
    pub fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        let file = self
            .freezer_file()
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no freezer"))?;
        let value = match (self.is_v2(), frozen) {
            (true, true) => "1",
            (true, false) => "0",
            (false, true) => "FROZEN",
            (false, false) => "THAWED",
        };
        write_file(&file, value)
    }

    /// Whether every process in the cgroup is frozen (v1 `FROZEN`, not `FREEZING`; v2
    /// `frozen 1` in `cgroup.events`).
    pub fn is_frozen(&self) -> io::Result<bool> {
        if self.is_v2() {
            Ok(key_values(&self.read("freezer", "cgroup.events")?).get("frozen") == Some(&1))
        } else {
            Ok(self.read("freezer", "freezer.state")?.trim() == "FROZEN")
        }
    }

    /// How many processes the kernel's OOM killer has killed in the cgroup: `oom_kill` of
    /// v1's `memory.oom_control` or v2's `memory.events`. `None` without a memory
    /// controller (or a kernel older than 4.13, which does not count).
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if self.is_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        key_values(&self.read("memory", file).ok()?)
            .get("oom_kill")
            .copied()
    }
}

/// Writes `value` into the existing cgroup file `path`. Without `O_CREAT`: cgroupfs
/// answers a missing file with `NotFound` then, not `PermissionDenied`.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Removes directory `dir` and those below it, deepest first (a cgroup goes with `rmdir`;
/// its files cannot be removed). A `dir` already gone is fine.
fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// The `key value` lines of a cgroup file (`memory.stat`, `cpu.stat`, ...) whose value is a
/// number.
pub fn key_values(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// The limits of `linux.resources` the shim applies: memory and swap,
/// CPU shares and quota, pids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes (`memory.limit`).
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (`memory.swap`, v1's `memsw`).
    pub memory_and_swap: Option<i64>,
    /// CPU shares (`cpu.shares`, 2 to 262144).
    pub cpu_shares: Option<u64>,
    /// CPU quota per period, microseconds (`cpu.quota`; -1: none).
    pub cpu_quota: Option<i64>,
    /// The quota's period, microseconds (`cpu.period`).
    pub cpu_period: Option<u64>,
    /// Most processes (`pids.limit`; 0 or less: none).
    pub pids: Option<i64>,
}

impl Resources {
    /// The (controller file, value) writes for `hierarchy`'s version, in an order the
    /// kernel accepts (v1: the memory limit before memory + swap).
    pub fn writes(&self, v2: bool) -> Vec<(&'static str, String)> {
        let mut writes = Vec::new();
        let limit = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if v2 {
            if let Some(memory) = self.memory {
                writes.push(("memory.max", limit(memory)));
            }
            if let (Some(both), Some(memory)) = (self.memory_and_swap, self.memory) {
                // v2 limits swap alone: memory + swap minus memory.
                let swap = if both < 0 { -1 } else { (both - memory).max(0) };
                writes.push(("memory.swap.max", limit(swap)));
            }
            if let Some(shares) = self.cpu_shares {
                writes.push(("cpu.weight", shares_to_weight(shares).to_string()));
            }
            if self.cpu_quota.is_some() || self.cpu_period.is_some() {
                let quota = self
                    .cpu_quota
                    .filter(|q| *q > 0)
                    .map_or("max".to_string(), |q| q.to_string());
                let period = self.cpu_period.unwrap_or(100_000);
                writes.push(("cpu.max", format!("{quota} {period}")));
            }
            if let Some(pids) = self.pids {
                writes.push((
                    "pids.max",
                    if pids > 0 {
                        pids.to_string()
                    } else {
                        "max".into()
                    },
                ));
            }
        } else {
            if let Some(memory) = self.memory {
                writes.push(("memory.limit_in_bytes", memory.to_string()));
            }
            if let Some(both) = self.memory_and_swap {
                writes.push(("memory.memsw.limit_in_bytes", both.to_string()));
            }
            if let Some(shares) = self.cpu_shares {
                writes.push(("cpu.shares", shares.to_string()));
            }
            if let Some(period) = self.cpu_period {
                writes.push(("cpu.cfs_period_us", period.to_string()));
            }
            if let Some(quota) = self.cpu_quota {
                writes.push(("cpu.cfs_quota_us", quota.to_string()));
            }
            if let Some(pids) = self.pids {
                writes.push((
                    "pids.max",
                    if pids > 0 {
                        pids.to_string()
                    } else {
                        "max".into()
                    },
                ));
            }
        }
        writes
    }
}

/// cgroup v1's CPU shares as v2's weight, the conversion runc and crun use: 2 → 1,
/// 1024 → 39, 262144 → 10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl Cgroup {
    /// Writes `resources` into the cgroup's files (on v1, each into its controller's
    /// directory, found by the file's prefix).
    ///
    /// Swap limits are skipped, with a warning, where the kernel does not account swap
    /// (no `memory.memsw.*` or `memory.swap.max` file), as runc does. On v1 the memory limit
    /// may not exceed memory + swap: raising both, the kernel takes the latter first, so a
    /// refused memory limit is tried again after it.
    pub fn apply(&self, resources: &Resources) -> io::Result<()> {
        // v2 keeps quota and period in one file: the one not given stays as it is.
        let mut resources = resources.clone();
        if self.is_v2() && resources.cpu_quota.is_some() != resources.cpu_period.is_some() {
            let now = self.read("cpu", "cpu.max").unwrap_or_default();
            let mut now = now.split_whitespace();
            let (quota, period) = (now.next(), now.next());
            resources.cpu_quota = resources
                .cpu_quota
                .or_else(|| Some(quota?.parse().unwrap_or(-1)));
            resources.cpu_period = resources.cpu_period.or_else(|| period?.parse().ok());
        }
        let writes = resources.writes(self.is_v2());
        let swap_file = |f: &str| f.contains("swap") || f.contains("memsw");
        for (file, value) in &writes {
            let controller = file.split('.').next().unwrap_or_default();
            let dir = self.dir_of(controller).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{file}: the {controller} controller is not mounted"),
                )
            })?;
            match write_file(&dir.join(file), value) {
                Err(err) if swap_file(file) && err.kind() == io::ErrorKind::NotFound => {
                    log::warn!("{file}: the kernel does not account swap; not limited");
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "{file}: the {controller} controller is not available to this \
                             cgroup (not enabled in its parent's cgroup.subtree_control)"
                        ),
                    ));
                }
                Err(err)
                    if *file == "memory.limit_in_bytes"
                        && err.raw_os_error() == Some(libc::EINVAL) =>
                {
                    let Some((both, value_both)) = writes
                        .iter()
                        .find(|(f, _)| *f == "memory.memsw.limit_in_bytes")
                    else {
                        return Err(err);
                    };
                    write_file(&dir.join(both), value_both)?;
                    write_file(&dir.join(file), value)?;
                }
                result => result?,
            }
        }
        Ok(())
    }
}

/// Enables in `dir`'s `cgroup.subtree_control` the controllers of [`V2_CONTROLLERS`] that
/// `dir` has (`cgroup.controllers`), for its children.
///
/// The kernel refuses (EBUSY) in a cgroup that has processes of its own, other than the
/// root: v2's "no internal processes" rule. That happens inside a container whose cgroup
/// namespace root holds its processes (Docker on a v2 host). The task's cgroup is then
/// made without those controllers: membership, freezer and kill still work, limits are
/// refused when asked for, and this is logged.
fn enable_controllers(dir: &Path) -> io::Result<()> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    if wanted
        .iter()
        .all(|w| enabled.split_whitespace().any(|e| *w == format!("+{e}")))
    {
        return Ok(());
    }
    match fs::write(dir.join("cgroup.subtree_control"), wanted.join(" ")) {
        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
            log::warn!(
                "{}: cannot enable {} for child cgroups, it has processes of its own; \
                 tasks below it get no limits",
                dir.display(),
                wanted.join(" ")
            );
            Ok(())
        }
        result => result,
    }
}

/// The cgroup path and limits a spec asks for (`linux.cgroupsPath`, `linux.resources`).
pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Result<Option<(PathBuf, Resources)>> {
    let Some(linux) = spec.linux() else {
        return Ok(None);
    };
    let path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let Some(path) = cgroup_path(&path)? else {
        return Ok(None);
    };
    let resources = linux
        .resources()
        .as_ref()
        .map(Resources::from_linux)
        .unwrap_or_default();
    Ok(Some((path, resources)))
}

impl Resources {
    /// The limits of the runtime spec's `LinuxResources` this shim applies; the rest
    /// (devices, block IO, hugepages, ...) is left alone.
    pub fn from_linux(res: &oci_spec::runtime::LinuxResources) -> Resources {
        let mut resources = Resources::default();
        if let Some(memory) = res.memory() {
            resources.memory = memory.limit();
            resources.memory_and_swap = memory.swap();
        }
        if let Some(cpu) = res.cpu() {
            resources.cpu_shares = cpu.shares();
            resources.cpu_quota = cpu.quota();
            resources.cpu_period = cpu.period();
        }
        if let Some(pids) = res.pids() {
            resources.pids = Some(pids.limit());
        }
        resources
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
30 25 0:27 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,name=systemd
";

    const UNIFIED: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn a_hybrid_machine_is_v1_and_a_unified_one_v2() {
        let Some(Hierarchy::V1(mounts)) = Hierarchy::from_mountinfo(HYBRID) else {
            panic!("hybrid is v1");
        };
        assert_eq!(mounts["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(mounts["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(!mounts.contains_key("freezer"), "{mounts:?}");
        assert_eq!(
            Hierarchy::from_mountinfo(UNIFIED),
            Some(Hierarchy::V2(PathBuf::from("/sys/fs/cgroup")))
        );
        assert_eq!(
            Hierarchy::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw"),
            None
        );
    }

    #[test]
    fn cgroups_paths_in_every_form() {
        let path = |p: &str| cgroup_path(p).expect(p).map(|p| p.display().to_string());
        assert_eq!(path(""), None);
        assert_eq!(path("/default/t1").as_deref(), Some("/default/t1"));
        assert_eq!(path("default/t1").as_deref(), Some("/default/t1"));
        assert_eq!(
            path("kubepods-besteffort-pod12.slice:cri-containerd:abc").as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            path(":cri:abc").as_deref(),
            Some("/system.slice/cri-abc.scope")
        );
        assert_eq!(path("-.slice::abc").as_deref(), Some("/abc.scope"));
        for bad in [
            "/",
            "//",
            "/./",
            "/a/../../etc",
            "x-.slice:p:n",
            "a.slice:p:",
            "a--b.slice:p:n",
        ] {
            assert!(
                matches!(cgroup_path(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn v2_parents_enable_the_controllers_their_children_need() {
        let root = tempfile::tempdir().expect("root");
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .expect("w");
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V2(root.path().to_path_buf()),
            path: PathBuf::from("/default/t1"),
        };
        // A plain directory tree has no `cgroup.controllers` below the root: the kernel
        // would fill it in; enabling there is skipped.
        cgroup.create().expect("create");
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).expect("read"),
            "+cpu +memory +pids"
        );
        assert!(root.path().join("default/t1").is_dir());
        cgroup.remove().expect("remove");
        assert!(!root.path().join("default/t1").exists());
    }

    #[test]
    fn resources_become_each_version_s_files() {
        let resources = Resources {
            memory: Some(32 << 20),
            memory_and_swap: Some(64 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids: Some(100),
        };
        assert_eq!(
            resources.writes(false),
            [
                ("memory.limit_in_bytes", "33554432".to_string()),
                ("memory.memsw.limit_in_bytes", "67108864".into()),
                ("cpu.shares", "1024".into()),
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "50000".into()),
                ("pids.max", "100".into()),
            ]
        );
        assert_eq!(
            resources.writes(true),
            [
                ("memory.max", "33554432".to_string()),
                ("memory.swap.max", "33554432".into()),
                ("cpu.weight", "39".into()),
                ("cpu.max", "50000 100000".into()),
                ("pids.max", "100".into()),
            ]
        );
        let unlimited = Resources {
            memory: Some(-1),
            memory_and_swap: Some(-1),
            cpu_quota: Some(-1),
            pids: Some(0),
            ..Default::default()
        };
        assert_eq!(
            unlimited.writes(true),
            [
                ("memory.max", "max".to_string()),
                ("memory.swap.max", "max".into()),
                ("cpu.max", "max 100000".into()),
                ("pids.max", "max".into()),
            ]
        );
        assert_eq!(
            (shares_to_weight(2), shares_to_weight(262_144)),
            (1, 10_000)
        );
    }

    /// The real hierarchy of this machine, as root: a cgroup is made, takes a process and a
    /// memory limit, and is removed once the process is gone.
    #[test]
    #[allow(clippy::disallowed_methods)] // a unit test is its own reaper
    fn a_real_cgroup_takes_a_process_and_a_limit() {
        if !may_write_cgroups() {
            return;
        }
        let hierarchy = Hierarchy::detect().expect("a cgroup hierarchy is mounted");
        let cgroup = Cgroup {
            hierarchy,
            path: PathBuf::from(format!("/shim-sample-test/{}", std::process::id())),
        };
        cgroup.create().expect("create");
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let result = (|| {
            cgroup.add(pid)?;
            cgroup.apply(&Resources {
                memory: Some(64 << 20),
                pids: Some(10),
                ..Default::default()
            })?;
            cgroup.procs()
        })();
        let _ = child.kill();
        let _ = child.wait();
        let removed = cgroup.remove();
        let parent = Cgroup {
            path: PathBuf::from("/shim-sample-test"),
            ..cgroup.clone()
        };
        let _ = parent.remove();
        assert_eq!(result.expect("add, apply, procs"), vec![pid]);
        removed.expect("remove the emptied cgroup");
    }

    /// Whether this test may write the machine's cgroups (as root). Without root it fails,
    /// or, with `SAMPLE_SHIM_SKIP_INTEGRATION=1`, says loudly that it skips.
    pub(crate) fn may_write_cgroups() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        if std::env::var("SAMPLE_SHIM_SKIP_INTEGRATION").as_deref() == Ok("1") {
            eprintln!("\n!!!!!!!! SKIPPED: cgroups need root (SAMPLE_SHIM_SKIP_INTEGRATION=1)\n");
            return false;
        }
        panic!("this test writes cgroups and needs root (or SAMPLE_SHIM_SKIP_INTEGRATION=1)");
    }

    /// Where cgroup2 is mounted on this machine, if anywhere (here an empty one beside the
    /// v1 hierarchies; on a v2-only machine the root).
    pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
    }

    /// The kernel's cgroup v2, as root: a cgroup takes a process, freezes and thaws it
    /// (`cgroup.freeze`, `cgroup.events`), and the host model's `end_all` kills it and the cgroup goes.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // a unit test is its own reaper
    async fn a_real_v2_cgroup_freezes_kills_and_goes() {
        if !may_write_cgroups() {
            return;
        }
        let root = cgroup2_mount().expect("a cgroup2 is mounted");
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V2(root),
            path: PathBuf::from(format!("/shim-sample-test-v2/{}", std::process::id())),
        };
        cgroup.create().expect("create");
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let checks = async {
            cgroup.add(pid)?;
            assert_eq!(cgroup.procs()?, vec![pid]);
            assert!(cgroup.can_freeze());
            for frozen in [true, false] {
                cgroup.set_frozen(frozen)?;
                for _ in 0..1000 {
                    if cgroup.is_frozen()? == frozen {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                assert_eq!(cgroup.is_frozen()?, frozen);
            }
            // How the host model ends a cgroup at `Delete` (`host.rs`).
            crate::host::end_all(&cgroup).await;
            cgroup.remove()
        };
        let result: io::Result<()> = checks.await;
        let _ = child.kill();
        let status = child.wait().expect("wait");
        let parent = Cgroup {
            path: PathBuf::from("/shim-sample-test-v2"),
            ..cgroup.clone()
        };
        let _ = parent.remove();
        result.expect("add, freeze, thaw, destroy");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "destroy killed it");
        assert!(cgroup.dirs().iter().all(|d| !d.exists()), "removed");
    }

    #[test]
    fn v1_cgroups_are_made_in_every_controller_and_take_processes() {
        let root = tempfile::tempdir().expect("root");
        let mounts: BTreeMap<String, PathBuf> = ["memory", "pids"]
            .iter()
            .map(|c| (c.to_string(), root.path().join(c)))
            .collect();
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V1(mounts),
            path: PathBuf::from("/default/t1"),
        };
        cgroup.create().expect("create");
        cgroup.add(4242).expect("add");
        for c in ["memory", "pids"] {
            let procs = root.path().join(c).join("default/t1/cgroup.procs");
            assert_eq!(fs::read_to_string(procs).expect("procs"), "4242");
        }
        assert_eq!(cgroup.procs().expect("procs"), vec![4242]);
    }
}
