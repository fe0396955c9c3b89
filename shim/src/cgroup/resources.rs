//! The limits of a spec's `linux.resources`, written into a task's cgroup: at `Create`
//! before the first process joins, and again at `Update`.
//!
//! [`Resources`] is what the shim applies of the runtime spec's `LinuxResources`; its
//! [`Resources::writes`] are the (file, value) pairs for one cgroup version, in an order the
//! kernel accepts; [`Cgroup::apply`] writes them into the right controller's directory.
//!
//! | resource | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | memory, memory + swap | `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` | `memory.max`, `memory.swap.max` |
//! | CPU shares, quota, period | `cpu.shares`, `cpu.cfs_quota_us`, `cpu.cfs_period_us` | `cpu.weight`, `cpu.max` |
//! | CPUs and memory nodes | `cpuset.cpus`, `cpuset.mems` | the same |
//! | pids | `pids.max` | the same |
//! | hugepages | `hugetlb.<size>.limit_in_bytes` | `hugetlb.<size>.max` |
//! | block I/O weight | `blkio.weight` (or `blkio.bfq.weight`), `blkio.weight_device` | `io.weight` (or `io.bfq.weight`) |
//! | block I/O throttles | `blkio.throttle.{read,write}_{bps,iops}_device` | `io.max` |
//! | devices | `devices.deny`, `devices.allow` (the spec's rules, then runc's defaults) | not enforced: needs an eBPF program (see below) |
//! | `unified` (raw v2 files) | refused | written as given |
//!
//! Devices on v2: the kernel filters device access with a `BPF_CGROUP_DEVICE` program
//! attached to the cgroup, which runc compiles from the spec. This shim does not load eBPF:
//! on v2 the spec's device list is not enforced, and [`Resources::unenforced`] says so for
//! the log. A host process opens the host's devices as its user may.

use std::{collections::BTreeMap, fs, io, path::Path};

use oci_spec::runtime::LinuxResources;

use crate::{
    cgroup::devices,
    cgroup::{write_file, Cgroup},
    error::{Error, Result},
};

/// One rule of the v1 devices controller: `type major:minor access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (`devices.allow`) or deny (`devices.deny`).
    pub allow: bool,
    /// `a` (all), `b` or `c`.
    pub kind: char,
    /// Major number; `None` is any (`*`).
    pub major: Option<i64>,
    /// Minor number; `None` is any (`*`).
    pub minor: Option<i64>,
    /// Some of `rwm`.
    pub access: String,
}

impl DeviceRule {
    /// The rule as the devices controller reads it: `c 1:3 rwm`, or `a` for every device.
    pub fn line(&self) -> String {
        if self.kind == 'a' {
            return "a".into();
        }
        let number = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            number(self.major),
            number(self.minor),
            self.access
        )
    }
}

/// The devices every container may use whatever its spec says, appended after the spec's
/// rules as runc appends them (its `AllowedDevices`): `mknod` of any device, and
/// `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom`, `/dev/tty`,
/// `/dev/ptmx` and the ptys. A spec's list begins with "deny all", so without them a
/// shell could not even open `/dev/null`.
fn default_devices() -> Vec<DeviceRule> {
    let rule = |kind, major, minor, access: &str| DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access: access.into(),
    };
    vec![
        rule('c', None, None, "m"),
        rule('b', None, None, "m"),
        rule('c', Some(1), Some(3), "rwm"),
        rule('c', Some(1), Some(8), "rwm"),
        rule('c', Some(1), Some(7), "rwm"),
        rule('c', Some(5), Some(0), "rwm"),
        rule('c', Some(1), Some(5), "rwm"),
        rule('c', Some(1), Some(9), "rwm"),
        rule('c', Some(136), None, "rwm"),
        rule('c', Some(5), Some(2), "rwm"),
    ]
}

/// A device's rate or weight: `major:minor value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceValue {
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Bytes or operations per second, or a weight.
    pub value: u64,
}

/// The four block I/O throttles: read bytes, write bytes, read and write operations per
/// second.
pub type Throttles = [Vec<DeviceValue>; 4];

/// The v1 file and v2 key of each throttle.
const THROTTLES: [(&str, &str); 4] = [
    ("blkio.throttle.read_bps_device", "rbps"),
    ("blkio.throttle.write_bps_device", "wbps"),
    ("blkio.throttle.read_iops_device", "riops"),
    ("blkio.throttle.write_iops_device", "wiops"),
];

/// The limits of `linux.resources` the shim applies.
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
    /// The CPUs the processes may run on (`cpu.cpus`, a list such as `0-1,3`).
    pub cpus: Option<String>,
    /// The memory nodes they may allocate from (`cpu.mems`).
    pub mems: Option<String>,
    /// Most processes (`pids.limit`; 0 or less: none).
    pub pids: Option<i64>,
    /// Hugepage limits in bytes, by page size (`2MB`, `1GB`).
    pub hugepages: Vec<(String, i64)>,
    /// Block I/O weight, 10 to 1000 (`blockIO.weight`).
    pub blkio_weight: Option<u16>,
    /// Block I/O weight per device.
    pub blkio_weight_devices: Vec<DeviceValue>,
    /// Block I/O throttles per device: read bytes, write bytes, read and write operations
    /// per second.
    pub throttles: Throttles,
    /// The device list, in the spec's order (later rules win).
    pub devices: Vec<DeviceRule>,
    /// Raw cgroup v2 files and values (`unified`).
    pub unified: BTreeMap<String, String>,
}

impl Resources {
    /// What the shim applies of the runtime spec's `LinuxResources`. Refuses (as
    /// `InvalidArgument`) what it cannot express: a `unified` key naming a path.
    pub fn from_linux(res: &LinuxResources) -> Result<Resources> {
        let mut resources = Resources::default();
        if let Some(memory) = res.memory() {
            resources.memory = memory.limit();
            resources.memory_and_swap = memory.swap();
        }
        if let Some(cpu) = res.cpu() {
            // 0 is "not set", as runc reads it.
            resources.cpu_shares = cpu.shares().filter(|s| *s != 0);
            resources.cpu_quota = cpu.quota();
            resources.cpu_period = cpu.period();
            resources.cpus = cpu.cpus().clone().filter(|c| !c.is_empty());
            resources.mems = cpu.mems().clone().filter(|m| !m.is_empty());
        }
        if let Some(pids) = res.pids() {
            resources.pids = Some(pids.limit());
        }
        for limit in res.hugepage_limits().iter().flatten() {
            let size = limit.page_size();
            if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Error::InvalidArgument(format!(
                    "linux.resources.hugepageLimits: page size {size:?} is not a size such as 2MB"
                )));
            }
            resources.hugepages.push((size.clone(), limit.limit()));
        }
        if let Some(io) = res.block_io() {
            resources.blkio_weight = io.weight().filter(|w| *w != 0);
            for device in io.weight_device().iter().flatten() {
                if let Some(weight) = device.weight().filter(|w| *w != 0) {
                    resources.blkio_weight_devices.push(DeviceValue {
                        major: device.major(),
                        minor: device.minor(),
                        value: weight.into(),
                    });
                }
            }
            let lists = [
                io.throttle_read_bps_device(),
                io.throttle_write_bps_device(),
                io.throttle_read_iops_device(),
                io.throttle_write_iops_device(),
            ];
            for (to, list) in resources.throttles.iter_mut().zip(lists) {
                to.extend(list.iter().flatten().map(|d| DeviceValue {
                    major: d.major(),
                    minor: d.minor(),
                    value: d.rate(),
                }));
            }
        }
        let rules = res.devices().iter().flatten();
        for rule in rules.clone() {
            let rule = DeviceRule {
                allow: rule.allow(),
                kind: rule
                    .typ()
                    .map_or('a', |t| t.as_str().chars().next().unwrap_or('a')),
                major: rule.major(),
                minor: rule.minor(),
                access: rule.access().clone().unwrap_or_else(|| "rwm".into()),
            };
            devices::validate(&rule)?;
            resources.devices.push(rule);
        }
        if rules.count() > 0 {
            resources.devices.extend(default_devices());
        }
        for (key, value) in res.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') || key.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "linux.resources.unified: {key:?} is not a cgroup file name"
                )));
            }
            resources.unified.insert(key.clone(), value.clone());
        }
        Ok(resources)
    }

    /// What of these limits goes unenforced on a cgroup of version `v2`, to say in the log:
    /// the device list on v2 (it needs an eBPF program this shim does not load).
    pub fn unenforced(&self, v2: bool) -> Option<String> {
        (v2 && !self.devices.is_empty()).then(|| {
            format!(
                "{} device rules are not enforced: on cgroup v2 that takes an eBPF \
                 program (BPF_CGROUP_DEVICE), which this shim does not load",
                self.devices.len()
            )
        })
    }

    /// The (controller file, value) writes for a cgroup of version `v2`, in an order the
    /// kernel accepts (v1: the memory limit before memory + swap; CPUs and memory nodes
    /// before anything joins; a device list's "deny all" before its exceptions). `bfq`:
    /// the kernel's weights are BFQ's (`blkio.bfq.weight`, `io.bfq.weight`), which keep
    /// the spec's scale.
    pub fn writes(&self, v2: bool, bfq: bool) -> Vec<(String, String)> {
        let mut writes: Vec<(String, String)> = Vec::new();
        let mut push = |file: &str, value: String| writes.push((file.to_string(), value));
        let limit = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(cpus) = &self.cpus {
            push("cpuset.cpus", cpus.clone());
        }
        if let Some(mems) = &self.mems {
            push("cpuset.mems", mems.clone());
        }
        if v2 {
            if let Some(memory) = self.memory {
                push("memory.max", limit(memory));
            }
            if let (Some(both), Some(memory)) = (self.memory_and_swap, self.memory) {
                // v2 limits swap alone: memory + swap minus memory.
                let swap = if both < 0 { -1 } else { (both - memory).max(0) };
                push("memory.swap.max", limit(swap));
            }
            if let Some(shares) = self.cpu_shares {
                push("cpu.weight", shares_to_weight(shares).to_string());
            }
            if self.cpu_quota.is_some() || self.cpu_period.is_some() {
                let quota = self
                    .cpu_quota
                    .filter(|q| *q > 0)
                    .map_or("max".to_string(), |q| q.to_string());
                let period = self.cpu_period.unwrap_or(100_000);
                push("cpu.max", format!("{quota} {period}"));
            }
        } else {
            if let Some(memory) = self.memory {
                push("memory.limit_in_bytes", memory.to_string());
            }
            if let Some(both) = self.memory_and_swap {
                push("memory.memsw.limit_in_bytes", both.to_string());
            }
            if let Some(shares) = self.cpu_shares {
                push("cpu.shares", shares.to_string());
            }
            if let Some(period) = self.cpu_period {
                push("cpu.cfs_period_us", period.to_string());
            }
            if let Some(quota) = self.cpu_quota {
                push("cpu.cfs_quota_us", quota.to_string());
            }
        }
        if let Some(pids) = self.pids {
            push(
                "pids.max",
                if pids > 0 {
                    pids.to_string()
                } else {
                    "max".into()
                },
            );
        }
        for (size, bytes) in &self.hugepages {
            // No limit: v2's `max`, v1's -1.
            let (file, value) = if v2 {
                (format!("hugetlb.{size}.max"), limit(*bytes))
            } else {
                (
                    format!("hugetlb.{size}.limit_in_bytes"),
                    bytes.max(&-1).to_string(),
                )
            };
            push(&file, value);
        }
        let weight = |w: u64| {
            if v2 && !bfq {
                blkio_weight_to_io_weight(w)
            } else {
                w
            }
        };
        let weight_file = match (v2, bfq) {
            (true, true) => "io.bfq.weight",
            (true, false) => "io.weight",
            (false, true) => "blkio.bfq.weight",
            (false, false) => "blkio.weight",
        };
        if let Some(w) = self.blkio_weight {
            let w = weight(w.into());
            push(
                weight_file,
                if v2 {
                    format!("default {w}")
                } else {
                    w.to_string()
                },
            );
        }
        for d in &self.blkio_weight_devices {
            let file = if v2 {
                weight_file.to_string()
            } else {
                format!("{weight_file}_device")
            };
            push(
                &file,
                format!("{}:{} {}", d.major, d.minor, weight(d.value)),
            );
        }
        for ((v1_file, v2_key), devices) in THROTTLES.iter().zip(&self.throttles) {
            for d in devices {
                if v2 {
                    let rate = if d.value == 0 {
                        "max".to_string()
                    } else {
                        d.value.to_string()
                    };
                    push("io.max", format!("{}:{} {v2_key}={rate}", d.major, d.minor));
                } else {
                    push(v1_file, format!("{}:{} {}", d.major, d.minor, d.value));
                }
            }
        }
        if !v2 {
            for rule in &self.devices {
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                push(file, rule.line());
            }
        }
        if v2 {
            for (key, value) in &self.unified {
                push(key, value.clone());
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

/// A block I/O weight (10 to 1000) as v2's `io.weight` (1 to 10000), as runc converts it.
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (weight.clamp(10, 1000) - 10) * 9999 / 990
}

impl Cgroup {
    /// Writes `resources` into the cgroup's files (on v1, each into its controller's
    /// directory, found by the file's prefix).
    ///
    /// Swap limits are skipped, with a warning, where the kernel does not account swap
    /// (no `memory.memsw.*` or `memory.swap.max` file), as runc does. On v1 the memory limit
    /// may not exceed memory + swap: raising both, the kernel takes the latter first, so a
    /// refused memory limit is tried again after it. A block I/O weight where the kernel
    /// has none (no proportional I/O scheduler) is refused, as runc refuses it.
    pub fn apply(&self, resources: &Resources) -> io::Result<()> {
        let v2 = self.is_v2();
        if !v2 && !resources.unified.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "linux.resources.unified names cgroup v2 files; this cgroup is v1",
            ));
        }
        // v2 keeps quota and period in one file: the one not given stays as it is.
        let mut resources = resources.clone();
        if v2 && resources.cpu_quota.is_some() != resources.cpu_period.is_some() {
            let now = self.read("cpu", "cpu.max").unwrap_or_default();
            let mut now = now.split_whitespace();
            let (quota, period) = (now.next(), now.next());
            resources.cpu_quota = resources
                .cpu_quota
                .or_else(|| Some(quota?.parse().unwrap_or(-1)));
            resources.cpu_period = resources.cpu_period.or_else(|| period?.parse().ok());
        }
        let bfq = if v2 {
            self.dir_of("io")
                .is_some_and(|d| d.join("io.bfq.weight").exists())
        } else {
            self.dir_of("blkio")
                .is_some_and(|d| d.join("blkio.bfq.weight").exists())
        };
        let writes = resources.writes(v2, bfq);
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
                        missing(v2, file),
                    ));
                }
                Err(err)
                    if file == "memory.limit_in_bytes"
                        && err.raw_os_error() == Some(libc::EINVAL) =>
                {
                    let Some((both, value_both)) = writes
                        .iter()
                        .find(|(f, _)| f == "memory.memsw.limit_in_bytes")
                    else {
                        return Err(err);
                    };
                    write_file(&dir.join(both), value_both)?;
                    write_file(&dir.join(file), value)?;
                }
                Err(source) => {
                    let refused = Refused {
                        file: file.clone(),
                        value: value.clone(),
                        source,
                    };
                    return Err(io::Error::new(refused.source.kind(), refused));
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }
}

/// A write the kernel refused: which file, what value, and the kernel's error.
#[derive(Debug)]
pub struct Refused {
    file: String,
    value: String,
    source: io::Error,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {:?}: {}", self.file, self.value, self.source)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The OS error code of `err`, also when [`Cgroup::apply`] said which write it was.
pub fn os_error_of(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()?
            .downcast_ref::<Refused>()?
            .source
            .raw_os_error()
    })
}

/// Why the kernel has no `file` for this cgroup, in words.
fn missing(v2: bool, file: &str) -> String {
    let controller = file.split('.').next().unwrap_or_default();
    if (file.starts_with("blkio.") || file.starts_with("io.")) && file.contains("weight") {
        return format!(
            "{file}: the kernel has no block I/O weight here (it needs the BFQ or CFQ I/O \
             scheduler); leave blockIO.weight unset"
        );
    }
    if file.starts_with("hugetlb.") {
        return format!("{file}: the kernel has no hugepages of that size");
    }
    if v2 {
        format!(
            "{file}: the {controller} controller is not available to this cgroup (not \
             enabled in its parent's cgroup.subtree_control), or the kernel has no such file"
        )
    } else {
        format!("{file}: the kernel's {controller} controller has no such file")
    }
}

/// The page sizes the kernel keeps hugepages of, as the hugetlb controller names them
/// (`2MB`, `1GB`), from the files of `dir`, a hugetlb cgroup: v1's
/// `hugetlb.<size>.limit_in_bytes`, v2's `hugetlb.<size>.max`.
pub fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let mut sizes: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let mut parts = name.split('.');
            (parts.next()? == "hugetlb").then_some(())?;
            let size = parts.next()?;
            let file = parts.next()?;
            (["limit_in_bytes", "max"].contains(&file) && parts.next().is_none())
                .then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes.dedup();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_resources(json: &str) -> Resources {
        let res: LinuxResources = serde_json::from_str(json).expect("LinuxResources");
        Resources::from_linux(&res).expect("from_linux")
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
            ..Default::default()
        };
        let pairs = |w: Vec<(String, String)>| -> Vec<(String, String)> { w };
        let expect = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            pairs(resources.writes(false, false)),
            expect(&[
                ("memory.limit_in_bytes", "33554432"),
                ("memory.memsw.limit_in_bytes", "67108864"),
                ("cpu.shares", "1024"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("pids.max", "100"),
            ])
        );
        assert_eq!(
            resources.writes(true, false),
            expect(&[
                ("memory.max", "33554432"),
                ("memory.swap.max", "33554432"),
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("pids.max", "100"),
            ])
        );
        let unlimited = Resources {
            memory: Some(-1),
            memory_and_swap: Some(-1),
            cpu_quota: Some(-1),
            pids: Some(0),
            ..Default::default()
        };
        assert_eq!(
            unlimited.writes(true, false),
            expect(&[
                ("memory.max", "max"),
                ("memory.swap.max", "max"),
                ("cpu.max", "max 100000"),
                ("pids.max", "max"),
            ])
        );
        assert_eq!(
            (shares_to_weight(2), shares_to_weight(262_144)),
            (1, 10_000)
        );
        assert_eq!(
            (
                blkio_weight_to_io_weight(10),
                blkio_weight_to_io_weight(500),
                blkio_weight_to_io_weight(1000)
            ),
            (1, 4950, 10_000)
        );
    }

    /// The kubelet's resources (cpuset, hugepages, block I/O) and a spec's device list,
    /// as each version's files.
    #[test]
    fn cpusets_hugepages_block_io_and_devices_become_files() {
        let resources = spec_resources(
            r#"{
                "cpu": { "cpus": "0-1", "mems": "0" },
                "hugepageLimits": [{ "pageSize": "2MB", "limit": 4194304 }],
                "blockIO": {
                    "weight": 500,
                    "weightDevice": [{ "major": 254, "minor": 0, "weight": 100 }],
                    "throttleReadBpsDevice": [{ "major": 254, "minor": 0, "rate": 1048576 }],
                    "throttleWriteIOPSDevice": [{ "major": 254, "minor": 0, "rate": 50 }]
                },
                "devices": [
                    { "allow": false, "access": "rwm" },
                    { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" },
                    { "allow": true, "type": "c", "major": 136, "access": "rwm" }
                ]
            }"#,
        );
        // The spec's "deny all" comes first.
        assert!(resources
            .devices
            .first()
            .is_some_and(|d| !d.allow && d.kind == 'a'));
        let files = |w: Vec<(String, String)>| {
            w.into_iter()
                .map(|(f, v)| format!("{f}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            files(resources.writes(false, false)),
            [
                "cpuset.cpus=0-1",
                "cpuset.mems=0",
                "hugetlb.2MB.limit_in_bytes=4194304",
                "blkio.weight=500",
                "blkio.weight_device=254:0 100",
                "blkio.throttle.read_bps_device=254:0 1048576",
                "blkio.throttle.write_iops_device=254:0 50",
                "devices.deny=a",
                "devices.allow=c 1:3 rwm",
                "devices.allow=c 136:* rwm",
                "devices.allow=c *:* m",
                "devices.allow=b *:* m",
                "devices.allow=c 1:3 rwm",
                "devices.allow=c 1:8 rwm",
                "devices.allow=c 1:7 rwm",
                "devices.allow=c 5:0 rwm",
                "devices.allow=c 1:5 rwm",
                "devices.allow=c 1:9 rwm",
                "devices.allow=c 136:* rwm",
                "devices.allow=c 5:2 rwm",
            ]
        );
        assert_eq!(
            files(resources.writes(true, false)),
            [
                "cpuset.cpus=0-1",
                "cpuset.mems=0",
                "hugetlb.2MB.max=4194304",
                "io.weight=default 4950",
                "io.weight=254:0 910",
                "io.max=254:0 rbps=1048576",
                "io.max=254:0 wiops=50",
            ]
        );
        // BFQ keeps the spec's scale.
        assert!(files(resources.writes(true, true)).contains(&"io.bfq.weight=default 500".into()));
        assert!(files(resources.writes(false, true)).contains(&"blkio.bfq.weight=500".into()));
        assert!(resources.unenforced(true).is_some());
        assert!(resources.unenforced(false).is_none());
    }

    #[test]
    fn bad_resources_are_refused() {
        for json in [
            r#"{ "unified": { "../memory.max": "1" } }"#,
            r#"{ "hugepageLimits": [{ "pageSize": "2MB/../x", "limit": 1 }] }"#,
        ] {
            let res: LinuxResources = serde_json::from_str(json).expect("LinuxResources");
            assert!(
                matches!(Resources::from_linux(&res), Err(Error::InvalidArgument(_))),
                "{json}"
            );
        }
    }

    #[test]
    fn hugepage_sizes_come_from_the_controller_s_files() {
        let dir = tempfile::tempdir().expect("dir");
        for file in [
            "hugetlb.2MB.max",
            "hugetlb.2MB.rsvd.max",
            "hugetlb.1GB.failcnt",
            "hugetlb.1GB.limit_in_bytes",
            "hugetlb.1GB.rsvd.limit_in_bytes",
            "cgroup.procs",
        ] {
            fs::write(dir.path().join(file), "0").expect("write");
        }
        assert_eq!(hugepage_sizes(dir.path()), ["1GB", "2MB"]);
    }

    /// A v2 cgroup as a tree of plain files (the kernel's files, made empty): every
    /// resource lands in its file, the kernel's refusal of a missing one is clear.
    #[test]
    fn a_v2_cgroup_s_files_take_the_resources() {
        use crate::cgroup::Hierarchy;
        let root = tempfile::tempdir().expect("root");
        let dir = root.path().join("default/t1");
        fs::create_dir_all(&dir).expect("mkdir");
        let files = [
            "cpuset.cpus",
            "cpuset.mems",
            "memory.max",
            "pids.max",
            "hugetlb.2MB.max",
            "io.weight",
            "io.max",
            "memory.high",
        ];
        for file in files {
            fs::write(dir.join(file), "").expect("touch");
        }
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V2(root.path().to_path_buf()),
            path: std::path::PathBuf::from("/default/t1"),
        };
        let resources = spec_resources(
            r#"{
                "memory": { "limit": 67108864 },
                "cpu": { "cpus": "1", "mems": "0" },
                "pids": { "limit": 20 },
                "hugepageLimits": [{ "pageSize": "2MB", "limit": 2097152 }],
                "blockIO": {
                    "weight": 100,
                    "throttleWriteBpsDevice": [{ "major": 8, "minor": 0, "rate": 4096 }]
                },
                "devices": [{ "allow": false, "access": "rwm" }],
                "unified": { "memory.high": "50000000" }
            }"#,
        );
        cgroup.apply(&resources).expect("apply");
        // Each write replaces the plain file's text: the last one of each file is there.
        let read = |file: &str| fs::read_to_string(dir.join(file)).expect("read");
        assert_eq!(read("cpuset.cpus"), "1");
        assert_eq!(read("cpuset.mems"), "0");
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("pids.max"), "20");
        assert_eq!(read("hugetlb.2MB.max"), "2097152");
        assert_eq!(read("io.weight"), "default 910");
        assert_eq!(read("io.max"), "8:0 wbps=4096");
        assert_eq!(read("memory.high"), "50000000");
        // No devices file on v2: the list is logged as not enforced, not written.
        assert!(resources.unenforced(true).is_some());
        // A size the kernel has no file for: refused, naming it.
        let more = spec_resources(r#"{ "hugepageLimits": [{ "pageSize": "64KB", "limit": 1 }] }"#);
        let err = cgroup.apply(&more).expect_err("no such size");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("hugetlb.64KB.max"), "{err}");
    }

    /// The real cgroup2 mount (here the empty one beside the v1 hierarchies: no
    /// controllers): raw `unified` files are written; a limit of a controller the cgroup
    /// lacks is refused, saying so.
    #[test]
    fn the_real_cgroup2_takes_unified_files_and_refuses_missing_controllers() {
        use crate::cgroup::{
            tests::{cgroup2_mount, may_write_cgroups},
            Hierarchy,
        };
        if !may_write_cgroups() {
            return;
        }
        let root = cgroup2_mount().expect("a cgroup2 is mounted");
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V2(root.clone()),
            path: std::path::PathBuf::from(format!("/shim-sample-res-{}", std::process::id())),
        };
        cgroup.create().expect("create");
        let result = (|| {
            cgroup.apply(&spec_resources(
                r#"{ "unified": { "cgroup.max.descendants": "3" } }"#,
            ))?;
            let written = cgroup.read("cgroup", "cgroup.max.descendants")?;
            let controllers = cgroup.read("cgroup", "cgroup.controllers")?;
            let refused = cgroup.apply(&spec_resources(r#"{ "pids": { "limit": 5 } }"#));
            io::Result::Ok((written, controllers, refused))
        })();
        let removed = cgroup.remove();
        let (written, controllers, refused) = result.expect("apply on cgroup2");
        removed.expect("remove");
        assert_eq!(written.trim(), "3");
        if !controllers.split_whitespace().any(|c| c == "pids") {
            let err = refused.expect_err("no pids controller here");
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
            assert!(err.to_string().contains("pids.max"), "{err}");
        }
    }
}
