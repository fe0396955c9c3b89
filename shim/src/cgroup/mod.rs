//! cgroups, read and written through cgroupfs: where a task's processes live (every
//! mounted hierarchy, as runc places them), their freezer, their OOM kills.
//! (`cgroup/resources.rs` writes their limits, `cgroup/metrics.rs` reads their figures, `cgroup/oom.rs` waits
//! for their OOM notifications, `model/host/spawn.rs` puts a new process in.)
//!
//! Two layouts exist. **cgroup v1** mounts one hierarchy per controller
//! (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu`, ...), and a task's cgroup is the same
//! path in each. **cgroup v2** mounts one unified hierarchy (`/sys/fs/cgroup`), where a
//! parent must enable a controller for its children (`cgroup.subtree_control`). A *hybrid*
//! machine has v1 controllers and an empty cgroup2 beside them (at `/sys/fs/cgroup/unified`):
//! the controllers are v1's, so it counts as v1, and the cgroup2 mount is one more
//! hierarchy to join ([`UNIFIED`]).
//!
//! Every function takes the hierarchy's root directories, so the tests run against a tree
//! of plain files in a temporary directory.

pub mod devices;
pub mod metrics;
pub mod oom;
pub mod resources;

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use crate::{
    cgroup::resources::Resources,
    error::{Error, Result},
};

/// The v1 hierarchies a task's cgroup is made in, those of them that are mounted: every
/// controller runc joins, and systemd's named hierarchy.
pub const V1_HIERARCHIES: [&str; 15] = [
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "name=systemd",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// The key of a hybrid machine's cgroup2 mount among a [`Hierarchy::V1`]'s mounts: runc
/// places a task there too, at the same path.
pub const UNIFIED: &str = "unified";

/// The v2 controllers a task's cgroup asks its parents for.
pub const V2_CONTROLLERS: [&str; 8] = [
    "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
];

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
    /// (hybrid machines included, with their cgroup2 mount as [`UNIFIED`]), else v2 when a
    /// cgroup2 is mounted.
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
                        if V1_HIERARCHIES.contains(&option) {
                            v1.insert(option.to_string(), point.clone());
                        }
                    }
                }
                (Some("cgroup2"), Some(point)) => v2 = v2.or(Some(point)),
                _ => {}
            }
        }
        if !v1.is_empty() {
            if let Some(unified) = v2 {
                v1.insert(UNIFIED.to_string(), unified);
            }
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
    /// Its directories: one per v1 hierarchy (co-mounted controllers share one), or one.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let relative = self.path.strip_prefix("/").unwrap_or(&self.path);
        match &self.hierarchy {
            Hierarchy::V1(mounts) => {
                let mut dirs: Vec<PathBuf> = mounts.values().map(|m| m.join(relative)).collect();
                dirs.sort();
                dirs.dedup();
                dirs
            }
            Hierarchy::V2(root) => vec![root.join(relative)],
        }
    }

    /// The cgroup2 directory of the cgroup: on v2 its one directory, on a hybrid v1
    /// machine the one in [`UNIFIED`]. A process can be born there (`CLONE_INTO_CGROUP`).
    pub fn unified_dir(&self) -> Option<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1(_) => self.dir_of(UNIFIED),
            Hierarchy::V2(_) => self.dir_of("cgroup"),
        }
    }

    /// Where a new process joins the cgroup: the cgroup2 directory it is born in
    /// (`CLONE_INTO_CGROUP`), and the `cgroup.procs` file of every other (v1) directory,
    /// which it moves itself into.
    pub fn placement(&self) -> (Option<PathBuf>, Vec<PathBuf>) {
        let unified = self.unified_dir();
        let procs = self
            .dirs()
            .into_iter()
            .filter(|dir| Some(dir) != unified.as_ref())
            .map(|dir| dir.join("cgroup.procs"))
            .collect();
        (unified, procs)
    }

    /// Makes the cgroup (and its parents). On v2 each parent also enables, for its
    /// children, the controllers it has of [`V2_CONTROLLERS`]. On v1 a new cpuset cgroup
    /// gets its parent's CPUs and memory nodes: it starts with none, and the kernel refuses
    /// a process into it (`ENOSPC`).
    pub fn create(&self) -> io::Result<()> {
        let mounts = match &self.hierarchy {
            Hierarchy::V2(root) => return self.create_v2(root),
            Hierarchy::V1(mounts) => mounts,
        };
        for (name, mount) in mounts {
            match name.as_str() {
                "cpuset" => self.create_cpuset(mount)?,
                // `create_dir_all` takes a directory made meanwhile as made.
                _ => fs::create_dir_all(self.below(mount))?,
            }
        }
        Ok(())
    }

    /// `mount` joined with the cgroup's path.
    fn below(&self, mount: &Path) -> PathBuf {
        mount.join(self.path.strip_prefix("/").unwrap_or(&self.path))
    }

    /// Makes the v2 cgroup below `root`, level by level, enabling controllers in each
    /// parent.
    fn create_v2(&self, root: &Path) -> io::Result<()> {
        let mut dir = root.to_path_buf();
        for part in self.path.components().skip(1) {
            enable_controllers(&dir)?;
            dir.push(part);
            make_dir(&dir)?;
        }
        Ok(())
    }

    /// Makes the v1 cpuset cgroup below `mount`, level by level, filling each level's
    /// empty `cpuset.cpus` and `cpuset.mems` from its parent, as runc does.
    fn create_cpuset(&self, mount: &Path) -> io::Result<()> {
        let mut dir = mount.to_path_buf();
        for part in self.path.components().skip(1) {
            let parent = dir.clone();
            dir.push(part);
            make_dir(&dir)?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = fs::read_to_string(dir.join(file)).unwrap_or_default();
                if own.trim().is_empty() {
                    let inherited = fs::read_to_string(parent.join(file))?;
                    if !inherited.trim().is_empty() {
                        write_file(&dir.join(file), inherited.trim())?;
                    }
                }
            }
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
    /// when not mounted; [`UNIFIED`] for a hybrid machine's cgroup2), on v2 the one
    /// directory.
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
pub(crate) fn write_file(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// Makes cgroup directory `dir`; one made meanwhile by another shim (a shared parent such
/// as `/default`) is fine.
fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        result => result,
    }
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

/// Enables in `dir`'s `cgroup.subtree_control` the controllers of [`V2_CONTROLLERS`] that
/// `dir` has (`cgroup.controllers`), for its children.
///
/// The kernel refuses (EBUSY) in a cgroup that has processes of its own, other than the
/// root: v2's "no internal processes" rule. That happens inside a container whose cgroup
/// namespace root holds its processes (Docker on a v2 host). The task's cgroup is then
/// made without those controllers: membership, freezer and kill still work, limits are
/// refused when asked for, and this is logged. It may also refuse one controller alone
/// (`cpu` while real-time processes run): on a refusal each is tried by itself.
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
    let control = dir.join("cgroup.subtree_control");
    if fs::write(&control, wanted.join(" ")).is_ok() {
        return Ok(());
    }
    // One at a time, as runc does: what the kernel refuses is left out, the rest enabled.
    let refused: Vec<String> = wanted
        .iter()
        .filter_map(|w| fs::write(&control, w).err().map(|e| format!("{w} ({e})")))
        .collect();
    if !refused.is_empty() {
        // EBUSY: the cgroup has processes of its own (v2's "no internal processes").
        log::warn!(
            "{}: cannot enable for child cgroups: {}; tasks below it get no such limits",
            dir.display(),
            refused.join(", ")
        );
    }
    Ok(())
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
    let resources = match linux.resources() {
        Some(resources) => Resources::from_linux(resources)?,
        None => Resources::default(),
    };
    Ok(Some((path, resources)))
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

    const V2_ONLY: &str = "\
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
        assert_eq!(mounts["name=systemd"], Path::new("/sys/fs/cgroup/systemd"));
        assert_eq!(mounts[UNIFIED], Path::new("/sys/fs/cgroup/unified"));
        assert!(!mounts.contains_key("freezer"), "{mounts:?}");
        // One directory per hierarchy; the process is born in the cgroup2 one and moves
        // itself into the others.
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V1(mounts),
            path: PathBuf::from("/default/t1"),
        };
        assert_eq!(cgroup.dirs().len(), 5, "{:?}", cgroup.dirs());
        let (born_in, moves_into) = cgroup.placement();
        assert_eq!(
            born_in.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified/default/t1"))
        );
        assert_eq!(moves_into.len(), 4, "{moves_into:?}");
        assert!(moves_into
            .iter()
            .all(|f| f.ends_with("default/t1/cgroup.procs")));
        assert_eq!(
            Hierarchy::from_mountinfo(V2_ONLY),
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
            "+cpuset +cpu +io +memory +pids"
        );
        assert!(root.path().join("default/t1").is_dir());
        cgroup.remove().expect("remove");
        assert!(!root.path().join("default/t1").exists());
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
            // How the host model ends a cgroup at `Delete` (`model/host/mod.rs`).
            crate::model::ending::end_all(&cgroup).await;
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

    /// A new v1 cpuset cgroup gets its parent's CPUs and memory nodes at every level (the
    /// kernel leaves them empty, and refuses a process into an empty one).
    #[test]
    fn v1_cpusets_are_filled_from_their_parents() {
        let root = tempfile::tempdir().expect("root");
        let cpuset = root.path().join("cpuset");
        fs::create_dir(&cpuset).expect("mkdir");
        fs::write(cpuset.join("cpuset.cpus"), "0-1\n").expect("w");
        fs::write(cpuset.join("cpuset.mems"), "0\n").expect("w");
        // What the kernel makes in a new directory: the files, empty.
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V1(BTreeMap::from([("cpuset".to_string(), cpuset.clone())])),
            path: PathBuf::from("/default/t1"),
        };
        for level in ["default", "default/t1"] {
            fs::create_dir(cpuset.join(level)).expect("mkdir");
            for file in ["cpuset.cpus", "cpuset.mems"] {
                fs::write(cpuset.join(level).join(file), "").expect("w");
            }
        }
        cgroup.create().expect("create");
        for level in ["default", "default/t1"] {
            let dir = cpuset.join(level);
            assert_eq!(
                fs::read_to_string(dir.join("cpuset.cpus")).expect("r"),
                "0-1"
            );
            assert_eq!(fs::read_to_string(dir.join("cpuset.mems")).expect("r"), "0");
        }
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
