//! `Stats`: what the task uses, in the message containerd's clients decode by its type URL.
//!
//! - **In a cgroup** (the spec named one and the shim may write cgroups): the cgroup's own
//!   files, as a runc shim reports them. On v1 an `io.containerd.cgroups.v1.Metrics`
//!   (`cpuacct.*`, `cpu.stat`, `memory.*`, `pids.*`), on v2 an
//!   `io.containerd.cgroups.v2.Metrics` (`cpu.stat`, `memory.stat`, `memory.current`,
//!   `memory.max`, `memory.events`, `pids.*`). The CRI plugin derives the kubelet's working
//!   set from them: usage minus `total_inactive_file` (v1) or `inactive_file` (v2).
//! - **Without one**: the sum of what `/proc` says about every process of the task
//!   (`members.rs`), in the v1 message, which every containerd client can decode:
//!   `cpuacct.usage` (user + system time), `memory.usage_in_bytes` (resident set),
//!   `pids.current`.
//!
//! The `key value` files (`memory.stat`, `cpu.stat`, `memory.events`) name the message's
//! fields, so they are copied by name (`copy_fields!`): one list of field names per
//! message, not a line per field. (protobuf's reflection would do it with no list, at the
//! price of its descriptor machinery in the binary: 1.4 MB more, 0.6 MiB more resident in
//! an idle shim, measured.)

use std::io;

use containerd_shim_protos::{
    cgroups::metrics as v1,
    cgroups_v2::metrics as v2,
    protobuf::{well_known_types::any::Any, Message},
};

use crate::{
    cgroup::{key_values, Cgroup},
    procfs::ProcStat,
    sys,
};

/// The type URL of cgroup v1's [`v1::Metrics`].
pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// The type URL of cgroup v2's [`v2::Metrics`].
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// `message` as an `Any` of `type_url`.
fn any(type_url: &str, message: &impl Message) -> io::Result<Any> {
    Ok(Any {
        type_url: type_url.into(),
        value: message.write_to_bytes().map_err(io::Error::other)?,
        ..Default::default()
    })
}

/// Metrics of the live ones among a task's `processes`, from `/proc`.
pub fn of_processes(processes: &[ProcStat]) -> io::Result<Any> {
    let (ticks, page) = (sys::clock_ticks(), sys::page_size());
    let (mut user, mut kernel, mut rss, mut count) = (0u64, 0u64, 0u64, 0u64);
    for process in processes.iter().filter(|p| p.state != 'Z') {
        user += process.user_ticks;
        kernel += process.kernel_ticks;
        rss += process.rss_pages * page;
        count += 1;
    }
    let nanos = |t: u64| t * 1_000_000_000 / ticks;
    let metrics = v1::Metrics {
        pids: Some(v1::PidsStat {
            current: count,
            ..Default::default()
        })
        .into(),
        cpu: Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: nanos(user + kernel),
                kernel: nanos(kernel),
                user: nanos(user),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(v1::MemoryStat {
            rss,
            total_rss: rss,
            usage: Some(v1::MemoryEntry {
                usage: rss,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    any(V1_TYPE_URL, &metrics)
}

/// Metrics of the processes in `cgroup`, from its files. A controller that is not there
/// leaves its part of the message empty.
pub fn of_cgroup(cgroup: &Cgroup) -> io::Result<Any> {
    if cgroup.is_v2() {
        any(V2_TYPE_URL, &v2_metrics(cgroup))
    } else {
        any(V1_TYPE_URL, &v1_metrics(cgroup))
    }
}

/// A number file's value; `max` (no limit) is `max`.
fn number(text: &str, max: u64) -> Option<u64> {
    match text.trim() {
        "max" => Some(max),
        n => n.parse().ok(),
    }
}

/// Copies each `key value` line of `text` into the field of `message` of that name
/// (after `rename`), among the `u64` fields listed; other keys are skipped.
macro_rules! copy_fields {
    ($message:expr, $text:expr, $rename:expr, [$($field:ident),* $(,)?]) => {
        for (key, value) in key_values($text) {
            match $rename(key).as_str() {
                $(stringify!($field) => $message.$field = value,)*
                _ => {}
            }
        }
    };
}

/// cgroup v1's file names for page events as `v1::MemoryStat` spells them
/// (`pgmajfault` → `pg_maj_fault`, `total_pgpgin` → `total_pg_pg_in`).
fn v1_memory_field(key: &str) -> String {
    key.replace("pgpgin", "pg_pg_in")
        .replace("pgpgout", "pg_pg_out")
        .replace("pgmajfault", "pg_maj_fault")
        .replace("pgfault", "pg_fault")
}

fn v1_metrics(cgroup: &Cgroup) -> v1::Metrics {
    let read = |controller: &str, file: &str| cgroup.read(controller, file).ok();
    let value = |controller: &str, file: &str| read(controller, file).and_then(|t| number(&t, 0));
    let mut metrics = v1::Metrics::new();

    if let Some(current) = value("pids", "pids.current") {
        metrics.pids = Some(v1::PidsStat {
            current,
            // No limit is 0 in this message (runc's convention).
            limit: value("pids", "pids.max").unwrap_or(0),
            ..Default::default()
        })
        .into();
    }

    if let Some(total) = value("cpuacct", "cpuacct.usage") {
        // `cpuacct.stat` counts clock ticks.
        let stat = read("cpuacct", "cpuacct.stat").unwrap_or_default();
        let ticks = key_values(&stat);
        let nanos = |key: &str| {
            ticks
                .get(key)
                .map_or(0, |t| t * 1_000_000_000 / sys::clock_ticks())
        };
        let per_cpu = read("cpuacct", "cpuacct.usage_percpu")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let throttle = key_values(&read("cpu", "cpu.stat").unwrap_or_default())
            .into_iter()
            .fold(v1::Throttle::new(), |mut t, (key, value)| {
                match key {
                    "nr_periods" => t.periods = value,
                    "nr_throttled" => t.throttled_periods = value,
                    "throttled_time" => t.throttled_time = value,
                    _ => {}
                }
                t
            });
        metrics.cpu = Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total,
                kernel: nanos("system"),
                user: nanos("user"),
                per_cpu,
                ..Default::default()
            })
            .into(),
            throttling: Some(throttle).into(),
            ..Default::default()
        })
        .into();
    }

    if let Some(stat) = read("memory", "memory.stat") {
        let mut memory = v1::MemoryStat::new();
        copy_fields!(
            memory,
            &stat,
            v1_memory_field,
            [
                cache,
                rss,
                rss_huge,
                mapped_file,
                dirty,
                writeback,
                pg_pg_in,
                pg_pg_out,
                pg_fault,
                pg_maj_fault,
                inactive_anon,
                active_anon,
                inactive_file,
                active_file,
                unevictable,
                hierarchical_memory_limit,
                hierarchical_swap_limit,
                total_cache,
                total_rss,
                total_rss_huge,
                total_mapped_file,
                total_dirty,
                total_writeback,
                total_pg_pg_in,
                total_pg_pg_out,
                total_pg_fault,
                total_pg_maj_fault,
                total_inactive_anon,
                total_active_anon,
                total_inactive_file,
                total_active_file,
                total_unevictable,
            ]
        );
        // `memory.*`, `memory.memsw.*`, `memory.kmem.*`: usage, peak, limit, failures.
        let entry = |prefix: &str| {
            value("memory", &format!("{prefix}.usage_in_bytes")).map(|usage| v1::MemoryEntry {
                usage,
                max: value("memory", &format!("{prefix}.max_usage_in_bytes")).unwrap_or(0),
                limit: value("memory", &format!("{prefix}.limit_in_bytes")).unwrap_or(0),
                failcnt: value("memory", &format!("{prefix}.failcnt")).unwrap_or(0),
                ..Default::default()
            })
        };
        memory.usage = entry("memory").into();
        memory.swap = entry("memory.memsw").into();
        memory.kernel = entry("memory.kmem").into();
        metrics.memory = Some(memory).into();
        if let Some(control) = read("memory", "memory.oom_control") {
            let mut oom = v1::MemoryOomControl::new();
            copy_fields!(
                oom,
                &control,
                str::to_string,
                [oom_kill_disable, under_oom, oom_kill]
            );
            metrics.memory_oom_control = Some(oom).into();
        }
    }
    metrics
}

fn v2_metrics(cgroup: &Cgroup) -> v2::Metrics {
    let read = |file: &str| {
        let controller = file.split('.').next().unwrap_or_default();
        cgroup.read(controller, file).ok()
    };
    // No limit is the largest number in this message (containerd's cgroups package).
    let value = |file: &str| read(file).and_then(|t| number(&t, u64::MAX));
    let mut metrics = v2::Metrics::new();

    if let Some(current) = value("pids.current") {
        metrics.pids = Some(v2::PidsStat {
            current,
            limit: value("pids.max").unwrap_or(0),
            ..Default::default()
        })
        .into();
    }
    // `cpu.stat` is there without the cpu controller too (usage only).
    if let Some(stat) = read("cpu.stat") {
        let mut cpu = v2::CPUStat::new();
        copy_fields!(
            cpu,
            &stat,
            str::to_string,
            [
                usage_usec,
                user_usec,
                system_usec,
                nr_periods,
                nr_throttled,
                throttled_usec,
                nr_bursts,
                burst_usec,
            ]
        );
        metrics.cpu = Some(cpu).into();
    }
    if let Some(stat) = read("memory.stat") {
        let mut memory = v2::MemoryStat::new();
        copy_fields!(
            memory,
            &stat,
            str::to_string,
            [
                anon,
                file,
                kernel_stack,
                slab,
                sock,
                shmem,
                file_mapped,
                file_dirty,
                file_writeback,
                anon_thp,
                inactive_anon,
                active_anon,
                inactive_file,
                active_file,
                unevictable,
                slab_reclaimable,
                slab_unreclaimable,
                pgfault,
                pgmajfault,
                workingset_refault,
                workingset_activate,
                workingset_nodereclaim,
                pgrefill,
                pgscan,
                pgsteal,
                pgactivate,
                pgdeactivate,
                pglazyfree,
                pglazyfreed,
                thp_fault_alloc,
                thp_collapse_alloc,
            ]
        );
        memory.usage = value("memory.current").unwrap_or(0);
        memory.usage_limit = value("memory.max").unwrap_or(u64::MAX);
        memory.max_usage = value("memory.peak").unwrap_or(0);
        memory.swap_usage = value("memory.swap.current").unwrap_or(0);
        memory.swap_limit = value("memory.swap.max").unwrap_or(0);
        memory.swap_max_usage = value("memory.swap.peak").unwrap_or(0);
        metrics.memory = Some(memory).into();
    }
    if let Some(events) = read("memory.events") {
        let mut counts = v2::MemoryEvents::new();
        copy_fields!(
            counts,
            &events,
            str::to_string,
            [low, high, max, oom, oom_kill, oom_group_kill,]
        );
        metrics.memory_events = Some(counts).into();
    }
    metrics
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;
    use crate::cgroup::Hierarchy;

    /// A v2 cgroup of plain files, as the kernel would show them.
    #[test]
    fn v2_figures_come_from_the_cgroup_s_files() {
        let root = tempfile::tempdir().expect("root");
        let dir = root.path().join("ns/t1");
        fs::create_dir_all(&dir).expect("dir");
        for (file, text) in [
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n",
            ),
            (
                "memory.stat",
                "anon 4096\nfile 8192\ninactive_file 4096\npgfault 12\nnot_a_field 1\n",
            ),
            ("memory.current", "16384\n"),
            ("memory.max", "33554432\n"),
            ("memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n"),
        ] {
            fs::write(dir.join(file), text).expect("write");
        }
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V2(root.path().to_path_buf()),
            path: PathBuf::from("/ns/t1"),
        };
        let any = of_cgroup(&cgroup).expect("metrics");
        assert_eq!(any.type_url, V2_TYPE_URL);
        let metrics = v2::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!((metrics.pids.current, metrics.pids.limit), (3, u64::MAX));
        assert_eq!(
            (
                metrics.cpu.usage_usec,
                metrics.cpu.user_usec,
                metrics.cpu.nr_periods
            ),
            (1500, 1000, 7)
        );
        let memory = &metrics.memory;
        assert_eq!(
            (
                memory.anon,
                memory.file,
                memory.inactive_file,
                memory.pgfault
            ),
            (4096, 8192, 4096, 12)
        );
        assert_eq!((memory.usage, memory.usage_limit), (16384, 32 << 20));
        assert_eq!(
            (metrics.memory_events.oom, metrics.memory_events.oom_kill),
            (2, 1)
        );
    }

    #[test]
    fn v1_page_event_names_become_the_message_s() {
        assert_eq!(v1_memory_field("total_pgpgin"), "total_pg_pg_in");
        assert_eq!(v1_memory_field("pgmajfault"), "pg_maj_fault");
        assert_eq!(v1_memory_field("pgfault"), "pg_fault");
        assert_eq!(v1_memory_field("rss_huge"), "rss_huge");
    }
}
