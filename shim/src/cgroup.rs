//! cgroups, read and written through cgroupfs: where a task's processes live, and their
//! limits. (Work in progress for issue 12: not wired into the service yet.)
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
    pub fn remove(&self) -> io::Result<()> {
        for dir in self.dirs() {
            match fs::remove_dir(&dir) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Enables in `dir`'s `cgroup.subtree_control` the controllers of [`V2_CONTROLLERS`] that
/// `dir` has (`cgroup.controllers`), for its children.
fn enable_controllers(dir: &Path) -> io::Result<()> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "))
}

#[cfg(test)]
mod tests {
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
