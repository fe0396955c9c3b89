//! `make bench` (`scripts/bench.sh`: builds the shim with `make shim`, then runs this with
//! `SHIM_BIN` set and `[--quick] [--starts N] [--tasks N] [--cycles N] [--stdout-mib N]
//! [--out DIR]`): our shim and Debian's `containerd-shim-runc-v2`, side by side, in one
//! private containerd.
//!
//! Writes `bench/RESULTS.md` and `bench/results.svg`. runc gets a busybox root filesystem
//! (`busybox-static`); our shim runs the same commands on the host in spec mode.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use integration::{proc, Containerd, RUNTIME};
use shim_demo::{
    api::{Containerd as Api, RuntimeOptions},
    fifo::FifoSet,
};

const RUNC: &str = "io.containerd.runc.v2";

struct Runtime {
    name: &'static str,
    runtime: &'static str,
    shim_binary: &'static str,
}

const RUNTIMES: [Runtime; 2] = [
    Runtime {
        name: "sample (ours)",
        runtime: RUNTIME,
        shim_binary: "containerd-shim-sample-v2",
    },
    Runtime {
        name: "runc-v2 (Go)",
        runtime: RUNC,
        shim_binary: "containerd-shim-runc-v2",
    },
];

struct Settings {
    quick: bool,
    starts: usize,
    tasks: usize,
    cycles: usize,
    stdout_bytes: u64,
}

/// `spec` (a JSON spec) without its `linux.cgroupsPath` when `remove` is set.
fn without_cgroup(spec: String, remove: bool) -> String {
    if !remove {
        return spec;
    }
    let mut value: serde_json::Value = match serde_json::from_str(&spec) {
        Ok(value) => value,
        Err(_) => return spec,
    };
    if let Some(linux) = value["linux"].as_object_mut() {
        linux.remove("cgroupsPath");
    }
    value.to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(durations: &mut [f64]) -> (f64, f64, f64) {
    durations.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(durations, 0.5),
        percentile(durations, 0.95),
        percentile(durations, 0.99),
    )
}

/// A spec for `runtime` running `args`: ours in spec mode on the host; runc in a busybox root.
fn spec(
    template: &serde_json::Value,
    rt: &Runtime,
    id: &str,
    rootfs: &Path,
    args: &[&str],
) -> String {
    let mut spec = template.clone();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/shim-bench/{id}"));
    if rt.runtime == RUNTIME {
        spec["annotations"] = serde_json::json!({ "com.example.sample.process": "spec" });
    }
    spec.to_string()
}

/// [`spec`], with `annotations` added.
fn spec_with(
    template: &serde_json::Value,
    rt: &Runtime,
    id: &str,
    rootfs: &Path,
    args: &[&str],
    annotations: &[(&str, &str)],
) -> String {
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec(template, rt, id, rootfs, args)).unwrap_or_default();
    for (key, value) in annotations {
        spec["annotations"][*key] = serde_json::json!(value);
    }
    spec.to_string()
}

/// Create + Start of task `id` (its container prepared, with `fifos`), in milliseconds;
/// then the task is killed and removed.
async fn timed_start(api: &Api, id: &str, fifos: FifoSet) -> Result<f64> {
    let started = Instant::now();
    api.create_task(id, &fifos).await?;
    api.start_task(id).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    api.kill(id, 9, false).await?;
    api.wait(id).await?;
    api.delete_task(id).await?;
    api.delete_container(id).await?;
    fifos.remove();
    Ok(elapsed)
}

/// The pod sizes measured: containers besides the sandbox.
const POD_SIZES: [usize; 3] = [1, 2, 10];

/// A pod as the CRI plugin would make it, through the task API: a sandbox and `size`
/// containers with the CRI's annotations, all `sleep`ing. Both shims group a pod's
/// containers by `io.kubernetes.cri.sandbox-id`. Returns the number of shims serving the
/// pod, their RSS and PSS, and the RSS of the sandbox's process (KiB), then removes the pod.
async fn pod_memory(
    (api, address): (&Api, &Path),
    (template, rootfs, image): (&serde_json::Value, &Path, &str),
    rt: &Runtime,
    size: usize,
    oci: Option<RuntimeOptions>,
) -> Result<(usize, u64, u64, u64)> {
    let pod = format!("pod-{}-{size}", rt.shim_binary);
    // In the OCI mode both shims get the same spec: no spec-mode annotation.
    let spec_rt = if oci.is_some() { &RUNTIMES[1] } else { rt };
    let mut members = Vec::new();
    for i in 0..=size {
        let (id, kind) = if i == 0 {
            (pod.clone(), "sandbox")
        } else {
            (format!("{pod}-c{i}"), "container")
        };
        let annotations = [
            ("io.kubernetes.cri.container-type", kind),
            ("io.kubernetes.cri.sandbox-id", pod.as_str()),
        ];
        let sleep = spec_with(
            template,
            spec_rt,
            &id,
            rootfs,
            &["/bin/sleep", "1000"],
            &annotations,
        );
        let (fifos, io) =
            prepare_with(api, address, &id, image, rt.runtime, &sleep, oci.clone()).await?;
        api.create_task(&id, &fifos).await?;
        api.start_task(&id).await?;
        members.push((id, fifos, io));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = shim_memory(rt.shim_binary, address);
    let sandbox = api.task(&pod).await?.map_or(0, |task| task.pid as i32);
    let sandbox_rss = fs::read_to_string(format!("/proc/{sandbox}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Containers first, the sandbox last, as a kubelet removes a pod.
    for (id, fifos, _io) in members.into_iter().rev() {
        api.kill(&id, 9, false).await?;
        api.wait(&id).await?;
        api.delete_task(&id).await?;
        api.delete_container(&id).await?;
        fifos.remove();
    }
    Ok((
        memory.len(),
        memory.iter().map(|m| m.0).sum(),
        memory.iter().map(|m| m.1).sum(),
        sandbox_rss,
    ))
}

/// Readers on a task's stdout and stderr FIFOs, held while the task lives. runc's shim
/// opens them write-only and waits for a reader; ours would not need one.
type Readers = (
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Receiver,
);

/// Everything a task needs before `CreateTask` (which callers time, or not): container `id`
/// with `spec`, its FIFOs, and readers on its stdout and stderr.
async fn prepare(
    api: &Api,
    address: &Path,
    id: &str,
    image: &str,
    runtime: &str,
    spec: &str,
) -> Result<(FifoSet, Readers)> {
    prepare_with(api, address, id, image, runtime, spec, None).await
}

/// [`prepare`], with the container's runtime `options`.
async fn prepare_with(
    api: &Api,
    address: &Path,
    id: &str,
    image: &str,
    runtime: &str,
    spec: &str,
    options: Option<RuntimeOptions>,
) -> Result<(FifoSet, Readers)> {
    let fifos = FifoSet::for_task(address, "default", id);
    fifos.create()?;
    api.create_container_with_options(id, image, runtime, spec, options)
        .await?;
    let readers = (
        shim_demo::fifo::open_reader(&fifos.stdout())?,
        shim_demo::fifo::open_reader(&fifos.stderr())?,
    );
    Ok((fifos, readers))
}

/// The shim daemon `binary` serving task `id` (`... -id <id> ...` on its command line).
fn shim_of(binary: &str, id: &str) -> Option<i32> {
    proc::all_pids().into_iter().find(|&pid| {
        let args = proc::cmdline(pid);
        args.first().is_some_and(|a| a.ends_with(binary))
            && args.windows(2).any(|w| w[0] == "-id" && w[1] == id)
            && !args.iter().any(|a| a == "start" || a == "delete")
    })
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let line = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<u64> = line
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // After the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime (the state, a letter, is filtered out above).
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// MiB/s of `bytes` from `/dev/zero` through `head | cat | cat > /dev/null`: two pipes and a
/// copying relay, the reference for what a shim between two pipes can reach.
fn cat_relay(bytes: u64) -> Result<f64> {
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("head -c {bytes} /dev/zero | cat | cat > /dev/null"),
        ])
        .status()?;
    if !status.success() {
        bail!("the cat relay failed: {status}");
    }
    Ok(bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

/// The pids of the shims `binary` that serve the containerd at `address`.
fn shim_pids(binary: &str, address: &Path) -> Vec<i32> {
    let address = address.display().to_string();
    proc::all_pids()
        .into_iter()
        .filter(|&pid| {
            let args = proc::cmdline(pid);
            args.first().is_some_and(|a| a.ends_with(binary)) && args.contains(&address)
        })
        .collect()
}

/// VmRSS and PSS (KiB) of each shim `binary` of the containerd at `address`.
fn shim_memory(binary: &str, address: &Path) -> Vec<(u64, u64)> {
    shim_pids(binary, address)
        .into_iter()
        .filter_map(|pid| {
            let field = |file: &str, key: &str| -> Option<u64> {
                fs::read_to_string(format!("/proc/{pid}/{file}"))
                    .ok()?
                    .lines()
                    .find(|l| l.starts_with(key))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            };
            Some((field("status", "VmRSS:")?, field("smaps_rollup", "Pss:")?))
        })
        .collect()
}

/// Where one process's resident memory is (KiB), from `/proc/<pid>/smaps`: its own binary,
/// shared libraries, heap, stacks and other anonymous memory; and its thread count.
fn breakdown(pid: i32) -> Vec<(&'static str, f64)> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut kib = [0u64; 5];
    let mut kind = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let name = line.split_whitespace().nth(5).unwrap_or_default();
            kind = match name {
                _ if Path::new(name) == exe => 0,
                _ if name.starts_with('/') => 1,
                "[heap]" => 2,
                _ if name.starts_with("[stack") => 3,
                _ => 4,
            };
        } else if first == "Rss:" {
            kib[kind] += words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    let threads = fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let size = fs::metadata(&exe).map_or(0, |m| m.len() / 1024);
    vec![
        ("its binary, mapped", kib[0] as f64),
        ("shared libraries", kib[1] as f64),
        ("heap", kib[2] as f64),
        ("main stack", kib[3] as f64),
        ("other anonymous (thread stacks, runtime)", kib[4] as f64),
        ("threads (count)", threads as f64),
        ("binary file size", size as f64),
    ]
}

/// Removes a directory tree when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Row {
    label: String,
    ours: f64,
    runc: f64,
    unit: &'static str,
    lower_is_better: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let out_dir = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .map_or_else(|| PathBuf::from("bench"), PathBuf::from);
    // `--starts N`: that many start runs, e.g. to compare two binaries' start latency in
    // quick runs.
    let starts_arg: Option<usize> = std::env::args()
        .skip_while(|a| a != "--starts")
        .nth(1)
        .and_then(|n| n.parse().ok());
    // `--stdout-mib N`: that much stdout per throughput row (quick runs: 32).
    let stdout_arg: Option<u64> = std::env::args()
        .skip_while(|a| a != "--stdout-mib")
        .nth(1)
        .and_then(|n| n.parse().ok());
    let mut settings = if quick {
        Settings {
            quick,
            starts: 10,
            tasks: 5,
            cycles: 5,
            stdout_bytes: 32 << 20,
        }
    } else {
        Settings {
            quick,
            starts: 200,
            tasks: 100,
            cycles: 50,
            stdout_bytes: 1 << 30,
        }
    };
    if let Some(starts) = starts_arg {
        settings.starts = starts;
    }
    if let Some(mib) = stdout_arg {
        settings.stdout_bytes = mib << 20;
    }
    // `--tasks N` (idle tasks, and so exit latency samples) and `--cycles N` (short tasks per
    // worker): quick runs with enough samples to compare two binaries' exit path.
    let count = |flag: &str| -> Option<usize> {
        std::env::args()
            .skip_while(|a| a != flag)
            .nth(1)
            .and_then(|n| n.parse().ok())
    };
    if let Some(tasks) = count("--tasks") {
        settings.tasks = tasks;
    }
    if let Some(cycles) = count("--cycles") {
        settings.cycles = cycles;
    }
    let cd = Containerd::start().context("the benchmark needs root and containerd")?;
    // The daemon is private, so are its FIFOs: remove them all, also when a step fails.
    let _fifos = RemoveOnDrop(shim_demo::fifo::daemon_dir(&cd.address));
    let image = cd.import_image_into("default");
    let api = Api::connect(&cd.address, "default").await?;
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("runc needs a root filesystem: apt-get install -y busybox-static");
    }
    let rootfs = cd.dir().join("rootfs");
    fs::create_dir_all(rootfs.join("bin"))?;
    for dir in ["proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::copy(busybox, rootfs.join("bin/busybox"))?;
    for applet in ["sh", "sleep", "true", "head", "cat"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    let template: serde_json::Value =
        serde_json::from_slice(&cd.ctr().args(["oci", "spec"]).output()?.stdout)
            .context("ctr oci spec")?;

    // For the log-URI rows: a scratch directory for `file://`, and a logger that reads its
    // two streams into /dev/null, so the row measures the transport, not a formatter.
    let scratch = tempfile::tempdir()?;
    let discard_logger = scratch.path().join("discard-logger");
    fs::write(
        &discard_logger,
        "#!/bin/sh\nexec 5>&-\ncat <&3 > /dev/null & cat <&4 > /dev/null & wait\n",
    )?;
    fs::set_permissions(
        &discard_logger,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    // The reference: the same bytes through `cat` between two pipes, in this run.
    let cat_mib_s = cat_relay(settings.stdout_bytes)?;

    let mut rows = Vec::new();
    let mut results: Vec<Vec<f64>> = Vec::new();
    let mut breakdowns: Vec<Vec<(&str, f64)>> = Vec::new();
    for rt in &RUNTIMES {
        let mut values = Vec::new();
        eprintln!("== {}", rt.name);
        // Idle memory: one task, then `tasks` tasks.
        let mut ids = Vec::new();
        for i in 0..settings.tasks {
            let id = format!("idle-{}-{i}", rt.shim_binary);
            let sleep = spec(&template, rt, &id, &rootfs, &["/bin/sleep", "1000"]);
            let (fifos, io) = prepare(&api, &cd.address, &id, image, rt.runtime, &sleep).await?;
            api.create_task(&id, &fifos).await?;
            api.start_task(&id).await?;
            ids.push((id, fifos, io));
            if i == 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let one = shim_memory(rt.shim_binary, &cd.address);
                let pid = shim_pids(rt.shim_binary, &cd.address);
                breakdowns.push(pid.first().map(|&pid| breakdown(pid)).unwrap_or_default());
                values.push(one.first().map_or(f64::NAN, |m| m.0 as f64 / 1024.0));
                values.push(one.first().map_or(f64::NAN, |m| m.1 as f64 / 1024.0));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let all = shim_memory(rt.shim_binary, &cd.address);
        values.push(all.iter().map(|m| m.0).sum::<u64>() as f64 / 1024.0);
        values.push(all.iter().map(|m| m.1).sum::<u64>() as f64 / 1024.0);

        // Exec latency, in the first idle task.
        let mut execs = Vec::new();
        let exec_spec =
            serde_json::json!({ "args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin:/usr/bin"] })
            .to_string();
        for i in 0..settings.starts.min(50) {
            let exec_id = format!("x{i}");
            let started = Instant::now();
            api.exec(&ids[0].0, &exec_id, &exec_spec).await?;
            api.run_exec(&ids[0].0, &exec_id).await?;
            execs.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        // Exit latency: kill, then the /tasks/exit event. containerd answers Subscribe only
        // with its first event, so the stream is read in the background.
        let mut exits = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let address = cd.address.clone();
        let listener = tokio::spawn(async move {
            let api = Api::connect(&address, "default").await?;
            let mut events = api.subscribe(&["topic==\"/tasks/exit\""]).await?;
            while let Some(envelope) = events.message().await? {
                let payload = shim_demo::commands::events::decode_task_event(
                    &envelope.topic,
                    &envelope.event.map(|e| e.value).unwrap_or_default(),
                );
                let _ = tx.send(
                    payload["container_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            anyhow::Ok(())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (id, fifos, _io) in ids.drain(..) {
            let started = Instant::now();
            api.kill(&id, 9, false).await?;
            loop {
                let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .context("no /tasks/exit within 10 s")?
                    .context("event stream ended")?;
                if seen == id {
                    break;
                }
            }
            exits.push(started.elapsed().as_secs_f64() * 1000.0);
            api.delete_task(&id).await?;
            api.delete_container(&id).await?;
            fifos.remove();
        }
        listener.abort();
        // Start latency: Create + Start of a task, in the cgroup its spec names; then the
        // same with no `linux.cgroupsPath`: the difference is what making the cgroup costs.
        let mut starts = Vec::new();
        let mut plain_starts = Vec::new();
        for i in 0..settings.starts {
            for (kind, times) in [("start", &mut starts), ("plain", &mut plain_starts)] {
                let id = format!("{kind}-{}-{i}", rt.shim_binary);
                let mut sleep: serde_json::Value = serde_json::from_str(&spec(
                    &template,
                    rt,
                    &id,
                    &rootfs,
                    &["/bin/sleep", "1000"],
                ))?;
                if kind == "plain" {
                    if let Some(linux) = sleep["linux"].as_object_mut() {
                        linux.remove("cgroupsPath");
                    }
                }
                let sleep = sleep.to_string();
                let (fifos, _io) =
                    prepare(&api, &cd.address, &id, image, rt.runtime, &sleep).await?;
                times.push(timed_start(&api, &id, fifos).await?);
            }
        }
        // Short-task throughput, concurrency 1 and 8; then concurrency 1 with no
        // `linux.cgroupsPath`: the difference is what the cgroup costs a task's life.
        let mut throughput = Vec::new();
        for (concurrency, cgroup) in [(1usize, true), (8, true), (1, false)] {
            let started = Instant::now();
            let mut handles = Vec::new();
            for worker in 0..concurrency {
                let address = cd.address.clone();
                let image = image.to_string();
                let cycles = settings.cycles;
                let spec_of = {
                    let template = template.clone();
                    let rootfs = rootfs.clone();
                    move |id: &str| {
                        let json = spec(
                            &template,
                            &RUNTIMES[if rt.runtime == RUNTIME { 0 } else { 1 }],
                            id,
                            &rootfs,
                            &["/bin/true"],
                        );
                        without_cgroup(json, !cgroup)
                    }
                };
                let runtime = rt.runtime;
                let tag = rt.shim_binary;
                handles.push(tokio::spawn(async move {
                    let api = Api::connect(&address, "default").await?;
                    for i in 0..cycles {
                        let id = format!("short-{tag}-{concurrency}-{cgroup}-{worker}-{i}");
                        let (fifos, _io) =
                            prepare(&api, &address, &id, &image, runtime, &spec_of(&id)).await?;
                        api.create_task(&id, &fifos).await?;
                        let wait = api.wait(&id);
                        api.start_task(&id).await?;
                        wait.await?;
                        api.delete_task(&id).await?;
                        api.delete_container(&id).await?;
                        fifos.remove();
                    }
                    anyhow::Ok(())
                }));
            }
            for handle in handles {
                handle.await??;
            }
            let total = (settings.cycles * concurrency) as f64;
            throughput.push(total / started.elapsed().as_secs_f64());
        }
        // Pods: shims and their memory for 1, 2 and 10 containers besides the sandbox.
        let mut pods = Vec::new();
        for size in POD_SIZES {
            pods.push(
                pod_memory(
                    (&api, &cd.address),
                    (&template, &rootfs, image),
                    rt,
                    size,
                    None,
                )
                .await?,
            );
        }
        // stdout throughput and the shim's CPU per GiB: through the FIFO, into a file
        // (`file://`), into a logger's pipes (`binary://`, a logger that discards).
        let mut stdout_rows = Vec::new();
        for scheme in ["fifo", "file", "binary"] {
            let id = format!("stdout-{scheme}-{}", rt.shim_binary);
            let count = settings.stdout_bytes.to_string();
            let head = spec(
                &template,
                rt,
                &id,
                &rootfs,
                &["/bin/head", "-c", &count, "/dev/zero"],
            );
            let (fifos, _readers) =
                prepare(&api, &cd.address, &id, image, rt.runtime, &head).await?;
            let log = scratch.path().join(format!("{id}.log"));
            let uri = match scheme {
                "file" => format!("file://{}", log.display()),
                "binary" => format!("binary://{}", discard_logger.display()),
                _ => fifos.stdout_path(),
            };
            let stderr_path = if scheme == "fifo" {
                fifos.stderr_path()
            } else {
                uri.clone()
            };
            if let Err(status) = api.create_task_with_io(&id, "", &uri, &stderr_path).await {
                if scheme == "fifo" {
                    return Err(status.into());
                }
                // A shim without log URIs (an older build, compared with `SHIM_BIN`).
                eprintln!("{}: {scheme}: {}", rt.name, status.message());
                stdout_rows.push((f64::NAN, f64::NAN));
                api.delete_container(&id).await?;
                fifos.remove();
                continue;
            }
            let shim = shim_of(rt.shim_binary, &id).context("the task's shim")?;
            // The FIFO's reader: a thread of its own doing blocking reads, as `cat` does, so
            // that the row compares with the `cat` relay (a tokio reader in this process,
            // which also runs the gRPC client, cost a third of the rate).
            let reading = (scheme == "fifo").then(|| {
                let path = fifos.stdout();
                let bytes = settings.stdout_bytes;
                std::thread::spawn(move || -> std::io::Result<u64> {
                    use std::io::Read;
                    let mut fifo = fs::File::open(path)?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut got = 0u64;
                    while got < bytes {
                        match fifo.read(&mut buf)? {
                            0 => break,
                            n => got += n as u64,
                        }
                    }
                    Ok(got)
                })
            });
            let cpu_before = cpu_seconds(shim);
            let started = Instant::now();
            api.start_task(&id).await?;
            if let Some(reading) = reading {
                let got = tokio::task::spawn_blocking(move || reading.join())
                    .await?
                    .map_err(|_| anyhow::anyhow!("the FIFO reader panicked"))??;
                if got < settings.stdout_bytes {
                    bail!("{id}: {got} of {} bytes", settings.stdout_bytes);
                }
            }
            api.wait(&id).await?;
            let seconds = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds(shim) - cpu_before;
            let gib = settings.stdout_bytes as f64 / (1u64 << 30) as f64;
            stdout_rows.push((
                settings.stdout_bytes as f64 / (1 << 20) as f64 / seconds,
                cpu / gib,
            ));
            api.delete_task(&id).await?;
            api.delete_container(&id).await?;
            fifos.remove();
            let _ = fs::remove_file(&log);
        }

        let (s50, s95, s99) = ms(&mut starts);
        let (p50, p95, _) = ms(&mut plain_starts);
        let (e50, _, e99) = ms(&mut exits);
        let (x50, _, x99) = ms(&mut execs);
        values.extend([
            s50,
            s95,
            s99,
            p50,
            p95,
            e50,
            e99,
            throughput[0],
            throughput[1],
            throughput[2],
            stdout_rows[0].0,
            stdout_rows[1].0,
            stdout_rows[2].0,
            cat_mib_s,
            stdout_rows[0].1,
            stdout_rows[1].1,
            stdout_rows[2].1,
            x50,
            x99,
        ]);
        for (shims, rss, _, _) in &pods {
            values.extend([*shims as f64, *rss as f64 / 1024.0]);
        }
        let (first, last) = (pods[0], pods[POD_SIZES.len() - 1]);
        let added = (POD_SIZES[POD_SIZES.len() - 1] - POD_SIZES[0]) as f64;
        values.push((last.1 as f64 - first.1 as f64) / added);
        values.push((last.2 as f64 - first.2 as f64) / added);
        values.push(first.3 as f64);
        results.push(values);
    }
    // The OCI mode: ours and runc-v2 driving the same runc, then the same crun.
    let mut oci_rows = Vec::new();
    for binary in ["runc", "crun"] {
        let measured = oci_mode(&api, &cd, &template, &rootfs, image, &settings, binary).await;
        match measured {
            Ok(more) => oci_rows.extend(more),
            Err(err) => bail!("OCI mode ({binary}): {err:#}"),
        }
    }
    // cgroup v2: ours in a daemon of its own whose shims use the cgroup2 mount alone.
    let v2_rows = cgroup_v2_starts(&settings, &template, &rootfs)
        .await
        .context("starts on cgroup v2")?;
    oci_rows.extend(v2_rows);
    // Pods over the CRI API, in a daemon of their own with the CRI plugin.
    let cri_rows = cri_pods(&settings).await.context("pods over the CRI API")?;
    oci_rows.extend(cri_rows);
    // The tasks' parent cgroup, which both shims leave (as `ctr`'s `/<namespace>` is left).
    for dir in integration::cgroup_dirs("/shim-bench") {
        integration::remove_cgroup_tree(&dir);
    }
    let labels: [(&str, &str, bool); 32] = [
        ("idle RSS, one shim", "MiB", true),
        ("idle PSS, one shim", "MiB", true),
        ("RSS, all shims (N tasks)", "MiB", true),
        ("PSS, all shims (N tasks)", "MiB", true),
        ("start latency p50", "ms", true),
        ("start latency p95", "ms", true),
        ("start latency p99", "ms", true),
        ("start latency p50, spec without cgroupsPath", "ms", true),
        ("start latency p95, spec without cgroupsPath", "ms", true),
        ("exit latency p50", "ms", true),
        ("exit latency p99", "ms", true),
        ("run-to-delete, concurrency 1", "tasks/s", false),
        ("run-to-delete, concurrency 8", "tasks/s", false),
        (
            "run-to-delete, concurrency 1, spec without cgroupsPath",
            "tasks/s",
            false,
        ),
        ("stdout throughput, FIFO", "MiB/s", false),
        ("stdout throughput, file://", "MiB/s", false),
        (
            "stdout throughput, binary:// (a logger that discards)",
            "MiB/s",
            false,
        ),
        (
            "pipe relay through cat (the same bytes, both columns)",
            "MiB/s",
            false,
        ),
        ("shim CPU per GiB of stdout, FIFO", "s", true),
        ("shim CPU per GiB of stdout, file://", "s", true),
        ("shim CPU per GiB of stdout, binary://", "s", true),
        ("exec latency p50", "ms", true),
        ("exec latency p99", "ms", true),
        ("pod of 1 container + sandbox: shims", "processes", true),
        ("pod of 1 container + sandbox: shim RSS", "MiB", true),
        ("pod of 2 containers + sandbox: shims", "processes", true),
        ("pod of 2 containers + sandbox: shim RSS", "MiB", true),
        ("pod of 10 containers + sandbox: shims", "processes", true),
        ("pod of 10 containers + sandbox: shim RSS", "MiB", true),
        ("shim RSS per additional container of a pod", "KiB", true),
        ("shim PSS per additional container of a pod", "KiB", true),
        (
            "the sandbox's process RSS (ours: pause; runc: busybox sleep)",
            "KiB",
            true,
        ),
    ];
    for (i, (label, unit, lower)) in labels.iter().enumerate() {
        rows.push(Row {
            label: label.replace("(N tasks)", &format!("({} tasks)", settings.tasks)),
            ours: results[0][i],
            runc: results[1][i],
            unit,
            lower_is_better: *lower,
        });
    }
    rows.extend(oci_rows);
    fs::create_dir_all(&out_dir)?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let cores = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .matches("processor")
        .count();
    let mut md = String::new();
    writeln!(md, "# Benchmark results\n")?;
    writeln!(
        md,
        "`make bench{}`, {} UTC.\n",
        if settings.quick { " QUICK=1" } else { "" },
        now()
    )?;
    writeln!(
        md,
        "- machine: {cpu}, {cores} cores; kernel {}",
        kernel.trim()
    )?;
    writeln!(
        md,
        "- containerd {}; runc shim: Debian's `containerd-shim-runc-v2`",
        cd.server_version()
    )?;
    writeln!(
        md,
        "- {} start runs, {} idle tasks, {} short tasks per worker, {} MiB of stdout\n",
        settings.starts,
        settings.tasks,
        settings.cycles,
        settings.stdout_bytes >> 20
    )?;
    writeln!(md, "| measure | ours | runc | ours / runc |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for row in &rows {
        if row.runc.is_nan() {
            // Ours alone (no runc-v2 counterpart): the ratio is in the label's terms.
            writeln!(
                md,
                "| {} ({}) | {:.2} | — | — |",
                row.label, row.unit, row.ours
            )?;
            continue;
        }
        writeln!(
            md,
            "| {} ({}) | {:.2} | {:.2} | {:.2} |",
            row.label,
            row.unit,
            row.ours,
            row.runc,
            row.ours / row.runc
        )?;
    }
    writeln!(md, "\n![ours / runc](results.svg)")?;
    writeln!(
        md,
        "\n## Where one idle shim's memory is\n\nResident KiB by mapping, from \
         `/proc/<pid>/smaps` of the first idle shim of each kind.\n"
    )?;
    writeln!(md, "| KiB | ours | runc |")?;
    writeln!(md, "|---|---:|---:|")?;
    if let [ours, runc] = &breakdowns[..] {
        for ((label, a), (_, b)) in ours.iter().zip(runc) {
            writeln!(md, "| {label} | {a:.0} | {b:.0} |")?;
        }
    }
    fs::write(out_dir.join("RESULTS.md"), &md)?;
    let compared: Vec<Row> = rows.into_iter().filter(|r| !r.runc.is_nan()).collect();
    fs::write(out_dir.join("results.svg"), svg(&compared))?;
    print!("{md}");
    Ok(())
}

/// Start latency of ours on cgroup v2 alone: a daemon whose shims have
/// `SAMPLE_SHIM_CGROUPS=v2` (this machine's cgroup2 mount, `/sys/fs/cgroup/unified`,
/// which needs no controller to hold a process), so that each task's process is born in
/// its cgroup (`clone3(CLONE_INTO_CGROUP)`). Starts with and without `linux.cgroupsPath`
/// alternate in the same daemon; their ratio is the goal (at most 1.3). runc-v2
/// has no such mode here (it uses the v1 hierarchies), so its column stays empty.
async fn cgroup_v2_starts(
    settings: &Settings,
    template: &serde_json::Value,
    rootfs: &Path,
) -> Result<Vec<Row>> {
    let cd = Containerd::start_with_env(&[("SAMPLE_SHIM_CGROUPS", "v2")])
        .context("a containerd whose shims use cgroup v2")?;
    let _fifos = RemoveOnDrop(shim_demo::fifo::daemon_dir(&cd.address));
    let image = cd.import_image_into("default");
    let api = Api::connect(&cd.address, "default").await?;
    let rt = &RUNTIMES[0];
    let (mut v2, mut plain) = (Vec::new(), Vec::new());
    for i in 0..settings.starts {
        for (kind, times) in [("v2", &mut v2), ("v2plain", &mut plain)] {
            let id = format!("{kind}-{i}");
            let json = spec(template, rt, &id, rootfs, &["/bin/sleep", "1000"]);
            let json = without_cgroup(json, kind == "v2plain");
            let (fifos, _io) = prepare(&api, &cd.address, &id, image, rt.runtime, &json).await?;
            times.push(timed_start(&api, &id, fifos).await?);
        }
    }
    let (v2_50, _, _) = ms(&mut v2);
    let (plain_50, _, _) = ms(&mut plain);
    let row = |label: &str, ours: f64| Row {
        label: label.to_string(),
        ours,
        runc: f64::NAN,
        unit: "ms",
        lower_is_better: true,
    };
    Ok(vec![
        row("start latency p50, cgroup v2 via CLONE_INTO_CGROUP", v2_50),
        row(
            "start latency p50, spec without cgroupsPath, same daemon as the v2 row",
            plain_50,
        ),
        Row {
            label: "cgroup v2 start over no-cgroup start, p50 (goal: at most 1.3)".into(),
            ours: v2_50 / plain_50,
            runc: f64::NAN,
            unit: "ratio",
            lower_is_better: true,
        },
    ])
}

/// The OCI mode's rows (`OCI mode (<binary>): ...`): our shim with `binary_name =
/// <binary>` in the "ours" column, containerd's runc-v2 shim running the same binary
/// (`BinaryName`, for crun) in the "runc" column, both on the same busybox root. With runc,
/// every row; with crun, the start latency.
async fn oci_mode(
    api: &Api,
    cd: &Containerd,
    template: &serde_json::Value,
    rootfs: &Path,
    image: &str,
    settings: &Settings,
    binary: &str,
) -> Result<Vec<Row>> {
    let config = cd.dir().join(format!("bench-{binary}.toml"));
    fs::write(&config, format!("binary_name = \"{binary}\"\n"))?;
    let config = config.display().to_string();
    let every_row = binary == "runc";
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for rt in &RUNTIMES {
        eprintln!("== OCI mode ({binary}): {}", rt.name);
        let options = if rt.runtime == RUNTIME {
            Some(shim_demo::api::runtime_options(&config))
        } else if binary != "runc" {
            Some(shim_demo::api::runc_options(binary))
        } else {
            None
        };
        let tag = format!("oci-{binary}-{}", rt.shim_binary);
        let make = |id: &str, args: &[&str]| spec(template, &RUNTIMES[1], id, rootfs, args);
        let mut values = Vec::new();
        // Start latency: Create + Start.
        let mut starts = Vec::new();
        for i in 0..settings.starts {
            let id = format!("{tag}-start-{i}");
            let sleep = make(&id, &["/bin/sleep", "1000"]);
            let (fifos, _io) = prepare_with(
                api,
                &cd.address,
                &id,
                image,
                rt.runtime,
                &sleep,
                options.clone(),
            )
            .await?;
            starts.push(timed_start(api, &id, fifos).await?);
        }
        let (s50, s95, _) = ms(&mut starts);
        values.extend([s50, s95]);
        if !every_row {
            columns.push(values);
            continue;
        }
        // Idle memory of one shim, exec latency in its task, then exit latency (Kill to
        // Wait's answer) over a few idle tasks.
        let mut idle = Vec::new();
        for i in 0..settings.tasks.clamp(1, 20) {
            let id = format!("{tag}-idle-{i}");
            let sleep = make(&id, &["/bin/sleep", "1000"]);
            let (fifos, io) = prepare_with(
                api,
                &cd.address,
                &id,
                image,
                rt.runtime,
                &sleep,
                options.clone(),
            )
            .await?;
            api.create_task(&id, &fifos).await?;
            api.start_task(&id).await?;
            idle.push((id, fifos, io));
            if i == 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let shim = shim_of(rt.shim_binary, &idle[0].0).context("the idle task's shim")?;
                let memory = shim_memory(rt.shim_binary, &cd.address);
                let one = shim_pids(rt.shim_binary, &cd.address)
                    .iter()
                    .position(|&p| p == shim)
                    .and_then(|i| memory.get(i).copied())
                    .unwrap_or((0, 0));
                values.extend([one.0 as f64 / 1024.0, one.1 as f64 / 1024.0]);
            }
        }
        let exec_spec = serde_json::json!({ "args": ["/bin/true"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"] })
        .to_string();
        let mut execs = Vec::new();
        for i in 0..settings.starts.min(50) {
            let exec_id = format!("x{i}");
            let started = Instant::now();
            api.exec(&idle[0].0, &exec_id, &exec_spec).await?;
            api.run_exec(&idle[0].0, &exec_id).await?;
            execs.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let mut exits = Vec::new();
        for (id, fifos, _io) in idle.drain(..) {
            let started = Instant::now();
            api.kill(&id, 9, false).await?;
            api.wait(&id).await?;
            exits.push(started.elapsed().as_secs_f64() * 1000.0);
            api.delete_task(&id).await?;
            api.delete_container(&id).await?;
            fifos.remove();
        }
        values.extend([ms(&mut execs).0, ms(&mut exits).0]);
        // Run-to-delete of `/bin/true`, concurrency 1 and 8.
        for concurrency in [1usize, 8] {
            let started = Instant::now();
            let mut handles = Vec::new();
            for worker in 0..concurrency {
                let address = cd.address.clone();
                let (image, runtime, options) = (image.to_string(), rt.runtime, options.clone());
                let (template, rootfs, tag) = (template.clone(), rootfs.to_path_buf(), tag.clone());
                let cycles = settings.cycles;
                handles.push(tokio::spawn(async move {
                    let api = Api::connect(&address, "default").await?;
                    for i in 0..cycles {
                        let id = format!("{tag}-short-{concurrency}-{worker}-{i}");
                        let json = spec(&template, &RUNTIMES[1], &id, &rootfs, &["/bin/true"]);
                        let (fifos, _io) = prepare_with(
                            &api,
                            &address,
                            &id,
                            &image,
                            runtime,
                            &json,
                            options.clone(),
                        )
                        .await?;
                        api.create_task(&id, &fifos).await?;
                        api.start_task(&id).await?;
                        api.wait(&id).await?;
                        api.delete_task(&id).await?;
                        api.delete_container(&id).await?;
                        fifos.remove();
                    }
                    anyhow::Ok(())
                }));
            }
            for handle in handles {
                handle.await??;
            }
            values.push((settings.cycles * concurrency) as f64 / started.elapsed().as_secs_f64());
        }
        let pod = pod_memory(
            (api, &cd.address),
            (template, rootfs, image),
            rt,
            10,
            options,
        )
        .await?;
        values.push(pod.1 as f64 / 1024.0);
        columns.push(values);
    }
    let labels: &[(&str, &'static str, bool)] = &[
        ("start latency p50", "ms", true),
        ("start latency p95", "ms", true),
        ("idle RSS, one shim", "MiB", true),
        ("idle PSS, one shim", "MiB", true),
        ("exec latency p50", "ms", true),
        ("exit latency p50 (Kill to Wait)", "ms", true),
        ("run-to-delete, concurrency 1", "tasks/s", false),
        ("run-to-delete, concurrency 8", "tasks/s", false),
        ("pod of 10 containers + sandbox: shim RSS", "MiB", true),
    ];
    let rows = if every_row { labels.len() } else { 1 };
    Ok(labels[..rows]
        .iter()
        .enumerate()
        .map(|(i, (label, unit, lower))| Row {
            label: format!("OCI mode ({binary}): {label}"),
            ours: columns[0][i],
            runc: columns[1][i],
            unit,
            lower_is_better: *lower,
        })
        .collect())
}

/// Pods over the CRI API, as a kubelet starts them: our shim in the OCI mode (the handler
/// `sample-oci`) and runc-v2 (`runc`), the same runc, in one private containerd with the CRI
/// plugin. Rows: a pod's start (RunPodSandbox, then CreateContainer and StartContainer of
/// one busybox container, until both run), p50; and the shims' RSS for a pod of 10
/// containers.
async fn cri_pods(settings: &Settings) -> Result<Vec<Row>> {
    use shim_demo::cri::{container, Cri, Pod};
    let cd = Containerd::start_cri().context("a containerd with the CRI plugin")?;
    let mut cri = Cri::connect(&cd.address).await?;
    let pod_of = |name: &str| -> Result<Pod> {
        let log_directory = cd.dir().join("pods").join(name);
        fs::create_dir_all(&log_directory)?;
        Ok(Pod {
            name: name.to_string(),
            namespace: "bench".to_string(),
            log_directory: log_directory.display().to_string(),
            annotations: Default::default(),
            cgroup_parent: String::new(),
        })
    };
    let sleep = || {
        container(
            "sleep",
            integration::image::BUSYBOX,
            &["sleep", "1000"],
            &[],
        )
    };
    let mut columns = Vec::new();
    for (handler, binary) in [
        (integration::OCI_HANDLER, "containerd-shim-sample-v2"),
        ("runc", "containerd-shim-runc-v2"),
    ] {
        eprintln!("== pods over the CRI API: {handler}");
        let mut starts = Vec::new();
        for i in 0..settings.starts.clamp(3, 20) {
            let pod = pod_of(&format!("start-{handler}-{i}"))?;
            let started = Instant::now();
            let pod_id = cri.run_pod(&pod, handler).await?;
            let id = cri.create_container(&pod_id, &pod, sleep()).await?;
            cri.start_container(&id).await?;
            starts.push(started.elapsed().as_secs_f64() * 1000.0);
            cri.stop_pod(&pod_id).await?;
            cri.remove_pod(&pod_id).await?;
        }
        let pod = pod_of(&format!("ten-{handler}"))?;
        let pod_id = cri.run_pod(&pod, handler).await?;
        for i in 0..10 {
            let mut config = sleep();
            if let Some(metadata) = config.metadata.as_mut() {
                metadata.name = format!("sleep-{i}");
            }
            config.log_path = format!("sleep-{i}.log");
            let id = cri.create_container(&pod_id, &pod, config).await?;
            cri.start_container(&id).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss: u64 = shim_memory(binary, &cd.address).iter().map(|m| m.0).sum();
        cri.stop_pod(&pod_id).await?;
        cri.remove_pod(&pod_id).await?;
        columns.push((ms(&mut starts).0, rss as f64 / 1024.0));
    }
    Ok(vec![
        Row {
            label: "OCI mode (runc), over CRI: pod start, sandbox + 1 container, p50".into(),
            ours: columns[0].0,
            runc: columns[1].0,
            unit: "ms",
            lower_is_better: true,
        },
        Row {
            label: "OCI mode (runc), over CRI: pod of 10 containers, shim RSS".into(),
            ours: columns[0].1,
            runc: columns[1].1,
            unit: "MiB",
            lower_is_better: true,
        },
    ])
}

fn now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One bar per measure: ours / runc, oriented so that longer is better for us.
fn svg(rows: &[Row]) -> String {
    let height = 30 * rows.len() + 40;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"18\">How many times better than runc's shim (1.0 = equal; longer is better for ours)</text>\n"
    );
    for (i, row) in rows.iter().enumerate() {
        let advantage = if row.lower_is_better {
            row.runc / row.ours
        } else {
            row.ours / row.runc
        };
        let advantage = if advantage.is_finite() {
            advantage
        } else {
            0.0
        };
        let y = 30 + i * 30;
        let width = (advantage.min(10.0) * 40.0) as usize;
        let color = if advantage >= 1.0 {
            "#2e7d32"
        } else {
            "#c62828"
        };
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\">{}</text><rect x=\"300\" y=\"{}\" width=\"{width}\" height=\"18\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{advantage:.2}x</text>",
            y + 14,
            row.label,
            y,
            305 + width,
            y + 14
        );
    }
    out + "<line x1=\"340\" y1=\"25\" x2=\"340\" y2=\""
        + &height.to_string()
        + "\" stroke=\"#555\" stroke-dasharray=\"4\"/>\n</svg>\n"
}
