//! `Stats`: CPU time and memory of the task, as the cgroup v1 `Metrics` that `ctr task
//! metrics` decodes.
//!
//! A runc shim reads the container's cgroup. This shim puts host processes in no cgroup of
//! their own (not on cgroup v1, not on v2), so it adds up what `/proc` says about every
//! process of the task (the shim's descendants) and reports it in the cgroup v1 message,
//! which every containerd client can decode: `cpuacct.usage` (user + system time),
//! `memory.usage_in_bytes` (resident set), `pids.current`.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use std::fs;

use crate::procfs;

/// The type URL containerd's clients look up for [`Metrics`].
pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// Metrics of every process below the shim.
pub fn collect() -> std::io::Result<Metrics> {
    let shim = std::process::id() as i32;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let (mut user, mut kernel, mut rss, mut count) = (0u64, 0u64, 0u64, 0u64);
    for process in procfs::descendants(shim)?.iter().filter(|p| p.state != 'Z') {
        let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", process.pid)) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .get(stat.rfind(')').unwrap_or(0) + 1..)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
        user += fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        kernel += fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        // Field 24 (rss, in pages).
        rss += fields
            .get(21)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * page;
        count += 1;
    }
    let nanos = |t: u64| t * 1_000_000_000 / ticks;
    Ok(Metrics {
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
    })
}
