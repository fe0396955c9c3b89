//! `Stats`: CPU time and memory of the task, as the cgroup v1 `Metrics` that `ctr task
//! metrics` decodes.
//!
//! A runc shim reads the container's cgroup. This shim puts host processes in no cgroup of
//! their own (not on cgroup v1, not on v2), so it adds up what `/proc` says about every
//! process of the task (`members.rs`) and reports it in the cgroup v1 message,
//! which every containerd client can decode: `cpuacct.usage` (user + system time),
//! `memory.usage_in_bytes` (resident set), `pids.current`.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};

use crate::{procfs::ProcStat, sys};

/// The type URL containerd's clients look up for [`Metrics`].
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// Metrics of the live ones among a task's `processes`.
pub fn collect(processes: &[ProcStat]) -> Metrics {
    let (ticks, page) = (sys::clock_ticks(), sys::page_size());
    let (mut user, mut kernel, mut rss, mut count) = (0u64, 0u64, 0u64, 0u64);
    for process in processes.iter().filter(|p| p.state != 'Z') {
        user += process.user_ticks;
        kernel += process.kernel_ticks;
        rss += process.rss_pages * page;
        count += 1;
    }
    let nanos = |t: u64| t * 1_000_000_000 / ticks;
    Metrics {
        pids: Some(PidsStat {
            current: count,
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: nanos(user + kernel),
                kernel: nanos(kernel),
                user: nanos(user),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            rss,
            total_rss: rss,
            usage: Some(MemoryEntry {
                usage: rss,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
