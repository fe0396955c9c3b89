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
    /// Most processes (`pids.limit`; 0: none).
    #[arg(long)]
    pub pids_limit: Option<i64>,
}

impl Limits {
    /// The runtime spec's `LinuxResources` with these limits.
    pub fn resources(&self) -> Value {
        let mut resources = Map::new();
        if let Some(limit) = self.memory_limit {
            resources.insert("memory".into(), json!({ "limit": limit }));
        }
        let mut cpu = Map::new();
        for (key, value) in [
            ("quota", self.cpu_quota.map(Value::from)),
            ("period", self.cpu_period.map(Value::from)),
            ("shares", self.cpu_shares.map(Value::from)),
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
        Value::Object(resources)
    }
}

/// Sends `limits` for task `id`.
pub async fn run(api: &Containerd, id: &str, limits: &Limits) -> Result<()> {
    let resources = limits.resources();
    if resources.as_object().is_some_and(Map::is_empty) {
        bail!("say which limit to set: --memory-limit, --cpu-quota, --cpu-period, --cpu-shares or --pids-limit");
    }
    api.update(id, &resources)
        .await
        .with_context(|| format!("update task {id} with {resources}"))
}
