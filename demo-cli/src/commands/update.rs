//! `shim-demo update`: new limits for a running task's cgroup (containerd's `Update`, what
//! the CRI plugin sends for UpdateContainerResources; Debian's `ctr` has no such command).

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::api::Containerd;

/// The limits to set; those left `None` stay as they are.
#[derive(Debug, Default, clap::Args)]
pub struct Limits {
    /// Memory limit in bytes (`linux.resources.memory.limit`).
    #[arg(long)]
    pub memory_limit: Option<i64>,
    /// CPU quota in microseconds per period (`cpu.quota`; -1: none).
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU period in microseconds (`cpu.period`).
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU shares, 2 to 262144 (`cpu.shares`; cgroup v2 weight derived from it).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// The CPUs the task may run on, e.g. `0-1,3` (`cpu.cpus`: the kubelet's CPU manager).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// The memory nodes it may allocate from (`cpu.mems`).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Most processes (`pids.limit`; 0: none).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// A file of the runtime spec's `LinuxResources` in JSON, as `ctr task update
    /// --resources` takes it (newer `ctr`s): block I/O, hugepages, devices, ... The flags
    /// above are set on top of it.
    #[arg(long, value_name = "FILE")]
    pub resources: Option<std::path::PathBuf>,
}

impl Limits {
    /// The runtime spec's `LinuxResources` with these limits.
    pub fn resources(&self) -> Result<Value> {
        let mut resources = match &self.resources {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("read {}", file.display()))?;
                match serde_json::from_str(&text)
                    .with_context(|| format!("{}: not JSON", file.display()))?
                {
                    Value::Object(map) => map,
                    _ => bail!("{}: not a LinuxResources object", file.display()),
                }
            }
            None => Map::new(),
        };
        if let Some(limit) = self.memory_limit {
            resources.insert("memory".into(), json!({ "limit": limit }));
        }
        let mut cpu = match resources.remove("cpu") {
            Some(Value::Object(cpu)) => cpu,
            _ => Map::new(),
        };
        for (key, value) in [
            ("quota", self.cpu_quota.map(Value::from)),
            ("period", self.cpu_period.map(Value::from)),
            ("shares", self.cpu_shares.map(Value::from)),
            ("cpus", self.cpuset_cpus.clone().map(Value::from)),
            ("mems", self.cpuset_mems.clone().map(Value::from)),
        ] {
            if let Some(value) = value {
                cpu.insert(key.into(), value);
            }
        }
        if !cpu.is_empty() {
            resources.insert("cpu".into(), Value::Object(cpu));
        }
        if let Some(limit) = self.pids_limit {
            resources.insert("pids".into(), json!({ "limit": limit }));
        }
        Ok(Value::Object(resources))
    }
}

/// Sends `limits` for task `id`.
pub async fn run(api: &Containerd, id: &str, limits: &Limits) -> Result<()> {
    let resources = limits.resources()?;
    if resources.as_object().is_some_and(Map::is_empty) {
        bail!(
            "say which limit to set: --memory-limit, --cpu-quota, --cpu-period, --cpu-shares, \
             --cpuset-cpus, --cpuset-mems, --pids-limit or --resources FILE"
        );
    }
    api.update(id, &resources)
        .await
        .with_context(|| format!("update task {id} with {resources}"))
}
