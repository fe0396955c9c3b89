//! `make bench` (`scripts/bench.sh`: builds the shim with `make shim`, then runs this with
//! `SHIM_BIN` set and `[--quick] [--starts N] [--tasks N] [--cycles N] [--stdout-mib N]
//! [--out DIR]`): our shim and containerd's `containerd-shim-runc-v2` (the daemon's own version), side by side, in one
//! private containerd.
//!
//! Writes `bench/RESULTS.md` and `bench/results.svg`. runc gets a busybox root filesystem
//! (`busybox-static`); our shim runs the same commands on the host in spec mode.
//!
//! `main` is the list of the parts, in the order of the results: the task API rows of each
//! shim ([`task_api_column`]), the OCI mode's rows ([`oci_rows`]), starts on cgroup v2
//! ([`cgroup_v2_starts`]), pods over the CRI API ([`cri_pods`]), then the report
//! ([`write_results`]).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use containerd_shim_protos::{protobuf::Message, shim::oci::CheckpointOptions};
use integration::{proc, Containerd, RUNTIME};
use shim_demo::{
    api::{Containerd as Api, RuntimeOptions},
    fifo::FifoSet,
};

const RUNC: &str = "io.containerd.runc.v2";

/// A shim the benchmark compares: one column of the results.
struct Runtime {
    /// The column's name in the progress log.
    name: &'static str,
    /// The runtime name a container asks for.
    runtime: &'static str,
    /// The binary containerd runs for it, to find its processes.
    shim_binary: &'static str,
}

/// Ours, then runc-v2: the "ours" and "runc" columns. A `static`, so that workers that
/// outlive a borrow can hold a `&'static Runtime`.
static RUNTIMES: [Runtime; 2] = [
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

/// How much to measure.
#[derive(Clone, Copy)]
struct Settings {
    /// `--quick`: a small smoke run (also said in the report's first line).
    quick: bool,
    /// Start runs per start-latency row.
    starts: usize,
    /// Idle tasks, and so exit latency samples.
    tasks: usize,
    /// Short tasks per worker in the run-to-delete rows.
    cycles: usize,
    /// Bytes of stdout per throughput row.
    stdout_bytes: u64,
}

impl Settings {
    /// The full run's or, with `--quick`, the quick run's, with what the command line
    /// overrides.
    fn from_args() -> Settings {
        let quick = std::env::args().any(|a| a == "--quick");
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
        // `--starts N`: that many start runs, e.g. to compare two binaries' start latency in
        // quick runs.
        if let Some(starts) = arg("--starts") {
            settings.starts = starts;
        }
        // `--stdout-mib N`: that much stdout per throughput row (quick runs: 32).
        if let Some(mib) = arg::<u64>("--stdout-mib") {
            settings.stdout_bytes = mib << 20;
        }
        // `--tasks N` (idle tasks, and so exit latency samples) and `--cycles N` (short tasks
        // per worker): quick runs with enough samples to compare two binaries' exit path.
        if let Some(tasks) = arg("--tasks") {
            settings.tasks = tasks;
        }
        if let Some(cycles) = arg("--cycles") {
            settings.cycles = cycles;
        }
        settings
    }
}

/// The value after `flag` on the command line, when there is one and it parses.
fn arg<T: FromStr>(flag: &str) -> Option<T> {
    std::env::args()
        .skip_while(|a| a != flag)
        .nth(1)
        .and_then(|value| value.parse().ok())
}

/// A private containerd as the measurements use it.
struct Daemon {
    /// A client in the namespace `default`.
    api: Api,
    /// Its socket: where the tasks' FIFOs are made, and what workers connect to.
    address: PathBuf,
    /// The image every container names.
    image: &'static str,
}

impl Daemon {
    /// Imports the test image into `cd`'s namespace `default` and connects to it.
    async fn of(cd: &Containerd) -> Result<Daemon> {
        let image = cd.import_image_into("default");
        let api = Api::connect(&cd.address, "default").await?;
        Ok(Daemon {
            api,
            address: cd.address.clone(),
            image,
        })
    }
}

/// What every task's spec is made from; cloned into workers.
#[derive(Clone)]
struct Specs {
    /// `ctr oci spec`'s default spec.
    template: serde_json::Value,
    /// A busybox root filesystem, for runc.
    rootfs: PathBuf,
}

impl Specs {
    /// Writes the busybox root filesystem into `cd`'s directory and asks `ctr` for the
    /// template.
    fn new(cd: &Containerd) -> Result<Specs> {
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
        let template = serde_json::from_slice(&cd.ctr().args(["oci", "spec"]).output()?.stdout)
            .context("ctr oci spec")?;
        Ok(Specs { template, rootfs })
    }

    /// A spec for `rt` running `args`: ours in spec mode on the host; runc in a busybox root.
    fn spec(&self, rt: &Runtime, id: &str, args: &[&str]) -> String {
        self.spec_value(rt, id, args).to_string()
    }

    /// [`Specs::spec`], with `annotations` added.
    fn spec_with(
        &self,
        rt: &Runtime,
        id: &str,
        args: &[&str],
        annotations: &[(&str, &str)],
    ) -> String {
        let mut spec = self.spec_value(rt, id, args);
        for (key, value) in annotations {
            spec["annotations"][*key] = serde_json::json!(value);
        }
        spec.to_string()
    }

    /// [`Specs::spec`], as JSON.
    fn spec_value(&self, rt: &Runtime, id: &str, args: &[&str]) -> serde_json::Value {
        let mut spec = self.template.clone();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["root"] = serde_json::json!({ "path": self.rootfs, "readonly": false });
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/shim-bench/{id}"));
        if rt.runtime == RUNTIME {
            spec["annotations"] = serde_json::json!({ "com.example.sample.process": "spec" });
        }
        spec
    }
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

/// The main daemon, where the task API rows and the OCI mode's rows are measured.
struct Bench {
    /// Removes the daemon's FIFOs when dropped, also when a step fails: the daemon is
    /// private, so are they. Dropped before the daemon (fields drop in order).
    _fifos: RemoveOnDrop,
    /// The daemon's client and image.
    daemon: Daemon,
    /// The tasks' specs.
    specs: Specs,
    /// How much to measure.
    settings: Settings,
    /// The daemon itself, stopped with its shims when dropped.
    cd: Containerd,
}

impl Bench {
    /// Starts the private containerd and prepares what the tasks need.
    async fn start(settings: Settings) -> Result<Bench> {
        let cd = Containerd::start().context("the benchmark needs root and containerd")?;
        Bench::on(cd, settings).await
    }

    /// Prepares what the tasks need in `cd`, a daemon already running.
    async fn on(cd: Containerd, settings: Settings) -> Result<Bench> {
        let fifos = RemoveOnDrop(shim_demo::fifo::daemon_dir(&cd.address));
        let daemon = Daemon::of(&cd).await?;
        let specs = Specs::new(&cd)?;
        Ok(Bench {
            _fifos: fifos,
            daemon,
            specs,
            settings,
            cd,
        })
    }
}

/// Where the stdout rows send a task's output besides its FIFO.
struct LogTargets {
    /// A scratch directory, for `file://`.
    scratch: tempfile::TempDir,
    /// A logger that reads its two streams into /dev/null (`binary://`), so that the row
    /// measures the transport, not a formatter.
    discard_logger: PathBuf,
}

impl LogTargets {
    /// Makes the scratch directory and writes the logger into it.
    fn new() -> Result<LogTargets> {
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
        Ok(LogTargets {
            scratch,
            discard_logger,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let settings = Settings::from_args();
    let out_dir = arg::<PathBuf>("--out").unwrap_or_else(|| PathBuf::from("bench"));
    let bench = Bench::start(settings).await?;
    let logs = LogTargets::new()?;
    // The reference: the same bytes through `cat` between two pipes, in this run.
    let cat_mib_s = cat_relay(settings.stdout_bytes)?;
    let (mut columns, mut breakdowns) = (Vec::new(), Vec::new());
    for rt in &RUNTIMES {
        let (column, memory) = task_api_column(&bench, rt, &logs, cat_mib_s).await?;
        columns.push(column);
        breakdowns.push(memory);
    }
    let mut rows = task_api_rows(&columns, settings.tasks);
    // The OCI mode: ours and runc-v2 driving the same runc, then the same crun.
    rows.extend(oci_rows(&bench).await?);
    // Drop-in: ours installed as runc-v2, against containerd's own, under runc-v2's name.
    rows.extend(drop_in_rows(&bench).await.context("drop-in")?);
    // cgroup v2: ours in a daemon of its own whose shims use the cgroup2 mount alone.
    let v2_rows = cgroup_v2_starts(&settings, &bench.specs).await;
    rows.extend(v2_rows.context("starts on cgroup v2")?);
    // Pods over the CRI API, in a daemon of their own with the CRI plugin.
    rows.extend(cri_pods(&settings).await.context("pods over the CRI API")?);
    // The tasks' parent cgroup, which both shims leave (as `ctr`'s `/<namespace>` is left).
    for dir in integration::cgroup_dirs("/shim-bench") {
        integration::remove_cgroup_tree(&dir);
    }
    let version = bench.cd.server_version();
    write_results(&out_dir, rows, &breakdowns, &settings, &version)
}

/// Readers on a task's stdout and stderr FIFOs, held while the task lives. runc's shim
/// opens them write-only and waits for a reader; ours would not need one.
type Readers = (
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Receiver,
);

/// Everything a task needs before `CreateTask` (which callers time, or not): container `id`
/// with `spec` and the runtime's `options`, its FIFOs, and readers on its stdout and stderr.
async fn prepare(
    daemon: &Daemon,
    id: &str,
    runtime: &str,
    spec: &str,
    options: Option<RuntimeOptions>,
) -> Result<(FifoSet, Readers)> {
    let fifos = FifoSet::for_task(&daemon.address, "default", id);
    fifos.create()?;
    daemon
        .api
        .create_container_with_options(id, daemon.image, runtime, spec, options)
        .await?;
    let readers = (
        shim_demo::fifo::open_reader(&fifos.stdout())?,
        shim_demo::fifo::open_reader(&fifos.stderr())?,
    );
    Ok((fifos, readers))
}

/// A task started and left running.
struct Running {
    /// The task's (and its container's) id.
    id: String,
    /// Its FIFOs, removed with the task.
    fifos: FifoSet,
    /// Readers on its stdout and stderr, held while it runs (none: `ctr run -d`, nobody
    /// reads).
    readers: Option<Readers>,
}

/// Prepares, creates and starts task `id`.
async fn run(
    daemon: &Daemon,
    id: &str,
    runtime: &str,
    spec: &str,
    options: Option<RuntimeOptions>,
) -> Result<Running> {
    let (fifos, readers) = prepare(daemon, id, runtime, spec, options).await?;
    daemon.api.create_task(id, &fifos).await?;
    daemon.api.start_task(id).await?;
    Ok(Running {
        id: id.to_string(),
        fifos,
        readers: Some(readers),
    })
}

/// Deletes the exited task `id`, its container and its FIFOs.
async fn delete(api: &Api, id: &str, fifos: FifoSet) -> Result<()> {
    api.delete_task(id).await?;
    api.delete_container(id).await?;
    fifos.remove();
    Ok(())
}

/// SIGKILLs task `id`, waits for its exit, then [`delete`]s it.
async fn kill_and_delete(api: &Api, id: &str, fifos: FifoSet) -> Result<()> {
    api.kill(id, 9, false).await?;
    api.wait(id).await?;
    delete(api, id, fifos).await
}

/// Create + Start of task `id` (its container prepared first, untimed), in milliseconds;
/// then the task is killed and removed.
async fn timed_start(
    daemon: &Daemon,
    id: &str,
    runtime: &str,
    spec: &str,
    options: Option<RuntimeOptions>,
) -> Result<f64> {
    let (fifos, _readers) = prepare(daemon, id, runtime, spec, options).await?;
    let started = Instant::now();
    daemon.api.create_task(id, &fifos).await?;
    daemon.api.start_task(id).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    kill_and_delete(&daemon.api, id, fifos).await?;
    Ok(elapsed)
}

/// One shim's column of the task API rows, in the order of [`TASK_API_LABELS`], and where
/// its first idle shim's memory is ([`breakdown`]).
async fn task_api_column(
    bench: &Bench,
    rt: &'static Runtime,
    logs: &LogTargets,
    cat_mib_s: f64,
) -> Result<(Vec<f64>, Vec<(&'static str, f64)>)> {
    eprintln!("== {}", rt.name);
    let (idle, mut values, memory) = idle_memory(bench, rt).await?;
    let first = &idle.first().context("no idle task (`--tasks 0`)")?.id;
    let mut execs = exec_latency(&bench.daemon.api, first, bench.settings.starts).await?;
    let mut exits = exit_latency(&bench.daemon, idle).await?;
    let mut detached = exit_latency(&bench.daemon, detached(bench, rt).await?).await?;
    // Start latency: Create + Start of a task, in the cgroup its spec names; then the same
    // with no `linux.cgroupsPath`: the difference is what making the cgroup costs.
    let kinds = (
        format!("start-{}", rt.shim_binary),
        format!("plain-{}", rt.shim_binary),
    );
    let (mut starts, mut plain_starts) = paired_starts(
        &bench.daemon,
        &bench.specs,
        rt,
        bench.settings.starts,
        kinds,
    )
    .await?;
    let throughput = short_tasks(bench, rt).await?;
    let pods = pods(bench, rt).await?;
    let stdout = stdout_rows(bench, rt, logs).await?;

    let (s50, s95, s99) = ms(&mut starts);
    let (p50, p95, _) = ms(&mut plain_starts);
    let (e50, _, e99) = ms(&mut exits);
    let (d50, _, _) = ms(&mut detached);
    let (x50, _, x99) = ms(&mut execs);
    values.extend([s50, s95, s99, p50, p95, e50, e99, d50]);
    values.extend(throughput);
    values.extend(stdout.iter().map(|(mib_s, _)| *mib_s));
    values.push(cat_mib_s);
    values.extend(stdout.iter().map(|(_, cpu)| *cpu));
    values.extend([x50, x99]);
    for pod in &pods {
        values.extend([pod.shims as f64, pod.rss as f64 / 1024.0]);
    }
    let (first, last) = (&pods[0], &pods[POD_SIZES.len() - 1]);
    let added = (POD_SIZES[POD_SIZES.len() - 1] - POD_SIZES[0]) as f64;
    values.push((last.rss as f64 - first.rss as f64) / added);
    values.push((last.pss as f64 - first.pss as f64) / added);
    values.push(first.sandbox_rss as f64);
    Ok((values, memory))
}

/// Idle memory: `tasks` sleeping tasks, each in a shim of its own. Returns the tasks (the
/// exec and exit rows use them); the RSS and PSS (MiB) of the first one's shim, then of all
/// the shims; and where the first shim's memory is.
async fn idle_memory(
    bench: &Bench,
    rt: &Runtime,
) -> Result<(Vec<Running>, Vec<f64>, Vec<(&'static str, f64)>)> {
    let address = &bench.daemon.address;
    let (mut tasks, mut values, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..bench.settings.tasks {
        let id = format!("idle-{}-{i}", rt.shim_binary);
        let sleep = bench.specs.spec(rt, &id, &["/bin/sleep", "1000"]);
        tasks.push(run(&bench.daemon, &id, rt.runtime, &sleep, None).await?);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let one = shim_memory(rt.shim_binary, address);
            let pid = shim_pids(rt.shim_binary, address);
            memory = pid.first().map(|&pid| breakdown(pid)).unwrap_or_default();
            values.push(one.first().map_or(f64::NAN, |m| m.0 as f64 / 1024.0));
            values.push(one.first().map_or(f64::NAN, |m| m.1 as f64 / 1024.0));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = shim_memory(rt.shim_binary, address);
    values.push(all.iter().map(|m| m.0).sum::<u64>() as f64 / 1024.0);
    values.push(all.iter().map(|m| m.1).sum::<u64>() as f64 / 1024.0);
    Ok((tasks, values, memory))
}

/// Exec latency (ms): `/bin/true` run in task `id` (Exec, then Start until it exits), once
/// per start run, at most 50 times.
async fn exec_latency(api: &Api, id: &str, starts: usize) -> Result<Vec<f64>> {
    let exec_spec =
        serde_json::json!({ "args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
        "env": ["PATH=/bin:/usr/bin"] })
        .to_string();
    let mut execs = Vec::new();
    for i in 0..starts.min(50) {
        let exec_id = format!("x{i}");
        let started = Instant::now();
        api.exec(id, &exec_id, &exec_spec).await?;
        api.run_exec(id, &exec_id).await?;
        execs.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(execs)
}

/// Exit latency (ms) of each of `tasks`: Kill, then the `/tasks/exit` event; the tasks are
/// deleted. containerd answers Subscribe only with its first event, so the stream is read
/// in the background.
async fn exit_latency(daemon: &Daemon, tasks: Vec<Running>) -> Result<Vec<f64>> {
    let mut exits = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let address = daemon.address.clone();
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
    for task in tasks {
        let started = Instant::now();
        daemon.api.kill(&task.id, 9, false).await?;
        loop {
            let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("no /tasks/exit within 10 s")?
                .context("event stream ended")?;
            if seen == task.id {
                break;
            }
        }
        exits.push(started.elapsed().as_secs_f64() * 1000.0);
        delete(&daemon.api, &task.id, task.fifos).await?;
    }
    listener.abort();
    Ok(exits)
}

/// Tasks as `ctr run -d` leaves them: printing all the time, with nobody reading their
/// FIFOs (full by the time [`exit_latency`] kills them), 10 at most.
async fn detached(bench: &Bench, rt: &Runtime) -> Result<Vec<Running>> {
    let mut tasks = Vec::new();
    for i in 0..bench.settings.starts.min(10) {
        let id = format!("detached-{}-{i}", rt.shim_binary);
        let loud = "while :; do echo 0123456789012345678901234567890123456789; done";
        let spec = bench.specs.spec(rt, &id, &["/bin/sh", "-c", loud]);
        let mut task = run(&bench.daemon, &id, rt.runtime, &spec, None).await?;
        task.readers = None;
        tasks.push(task);
    }
    Ok(tasks)
}

/// Start latencies (ms) of `runs` pairs of sleeping tasks, alternating in one daemon: one
/// in the cgroup its spec names (ids `<with>-<i>`), one whose spec has no
/// `linux.cgroupsPath` (ids `<without>-<i>`).
async fn paired_starts(
    daemon: &Daemon,
    specs: &Specs,
    rt: &Runtime,
    runs: usize,
    (with, without): (String, String),
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut cgroup, mut plain) = (Vec::new(), Vec::new());
    for i in 0..runs {
        for (kind, times) in [(&with, &mut cgroup), (&without, &mut plain)] {
            let id = format!("{kind}-{i}");
            let sleep = specs.spec(rt, &id, &["/bin/sleep", "1000"]);
            let sleep = without_cgroup(sleep, kind == &without);
            times.push(timed_start(daemon, &id, rt.runtime, &sleep, None).await?);
        }
    }
    Ok((cgroup, plain))
}

/// Short-task throughput (tasks/s), concurrency 1 and 8; then concurrency 1 with no
/// `linux.cgroupsPath`: the difference is what the cgroup costs a task's life.
async fn short_tasks(bench: &Bench, rt: &'static Runtime) -> Result<Vec<f64>> {
    let mut throughput = Vec::new();
    for (concurrency, cgroup) in [(1usize, true), (8, true), (1, false)] {
        let specs = bench.specs.clone();
        let spec_of = move |id: &str| without_cgroup(specs.spec(rt, id, &["/bin/true"]), !cgroup);
        let prefix = format!("short-{}-{concurrency}-{cgroup}", rt.shim_binary);
        let workers = (concurrency, bench.settings.cycles);
        let rate = run_to_delete(&bench.daemon, (rt.runtime, None), workers, prefix, spec_of);
        throughput.push(rate.await?);
    }
    Ok(throughput)
}

/// Tasks per second from Create to Delete of `/bin/true`: `workers.0` workers, each with a
/// client of its own, run `workers.1` tasks each (ids `<prefix>-<worker>-<i>`, specs from
/// `spec_of`) on `runtime` with its `options`.
async fn run_to_delete(
    daemon: &Daemon,
    (runtime, options): (&'static str, Option<RuntimeOptions>),
    (concurrency, cycles): (usize, usize),
    prefix: String,
    spec_of: impl Fn(&str) -> String + Clone + Send + 'static,
) -> Result<f64> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..concurrency {
        let (address, image) = (daemon.address.clone(), daemon.image);
        let (options, spec_of) = (options.clone(), spec_of.clone());
        let prefix = format!("{prefix}-{worker}");
        handles.push(tokio::spawn(async move {
            let api = Api::connect(&address, "default").await?;
            let daemon = Daemon {
                api,
                address,
                image,
            };
            for i in 0..cycles {
                let id = format!("{prefix}-{i}");
                let spec = spec_of(&id);
                let (fifos, _io) = prepare(&daemon, &id, runtime, &spec, options.clone()).await?;
                daemon.api.create_task(&id, &fifos).await?;
                daemon.api.start_task(&id).await?;
                daemon.api.wait(&id).await?;
                delete(&daemon.api, &id, fifos).await?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok((cycles * concurrency) as f64 / started.elapsed().as_secs_f64())
}

/// The pod sizes measured: containers besides the sandbox.
const POD_SIZES: [usize; 3] = [1, 2, 10];

/// Pods: shims and their memory for each of [`POD_SIZES`]. Ours is asked for the host mode
/// by name: it refuses the CRI's containers host processes otherwise.
async fn pods(bench: &Bench, rt: &Runtime) -> Result<Vec<PodMemory>> {
    let options = if rt.runtime == RUNTIME {
        let config = bench.cd.dir().join("bench-host.toml");
        fs::write(&config, "mode = \"host\"\n")?;
        Some(shim_demo::api::runtime_options(
            &config.display().to_string(),
        ))
    } else {
        None
    };
    let mut pods = Vec::new();
    for size in POD_SIZES {
        pods.push(pod_memory(bench, (rt, rt), size, options.clone()).await?);
    }
    Ok(pods)
}

/// What a pod costs, as [`pod_memory`] measures it.
struct PodMemory {
    /// The number of shims serving the pod.
    shims: usize,
    /// Their RSS (KiB).
    rss: u64,
    /// Their PSS (KiB).
    pss: u64,
    /// The RSS of the sandbox's process (KiB).
    sandbox_rss: u64,
}

/// A pod as the CRI plugin would make it, through the task API: a sandbox and `size`
/// containers with the CRI's annotations, all `sleep`ing, on `rt` with `options`, with
/// `spec_rt`'s spec (in the OCI mode both shims get runc-v2's: no spec-mode annotation).
/// Both shims group a pod's containers by `io.kubernetes.cri.sandbox-id`. Measures the
/// pod, then removes it.
async fn pod_memory(
    bench: &Bench,
    (rt, spec_rt): (&Runtime, &Runtime),
    size: usize,
    options: Option<RuntimeOptions>,
) -> Result<PodMemory> {
    let (api, address) = (&bench.daemon.api, &bench.daemon.address);
    let pod = format!("pod-{}-{size}", rt.shim_binary);
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
        let sleep = bench
            .specs
            .spec_with(spec_rt, &id, &["/bin/sleep", "1000"], &annotations);
        members.push(run(&bench.daemon, &id, rt.runtime, &sleep, options.clone()).await?);
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
    for member in members.into_iter().rev() {
        kill_and_delete(api, &member.id, member.fifos).await?;
    }
    Ok(PodMemory {
        shims: memory.len(),
        rss: memory.iter().map(|m| m.0).sum(),
        pss: memory.iter().map(|m| m.1).sum(),
        sandbox_rss,
    })
}

/// stdout throughput (MiB/s) and the shim's CPU per GiB (s): through the FIFO, into a file
/// (`file://`), into a logger's pipes (`binary://`, a logger that discards).
async fn stdout_rows(bench: &Bench, rt: &Runtime, logs: &LogTargets) -> Result<Vec<(f64, f64)>> {
    let mut rows = Vec::new();
    for scheme in ["fifo", "file", "binary"] {
        rows.push(stdout_throughput(bench, rt, logs, scheme).await?);
    }
    Ok(rows)
}

/// One [`stdout_rows`] row: `head -c <stdout bytes> /dev/zero` with its stdout sent by
/// `scheme`; NaN where the shim has no log URIs (an older build, compared with `SHIM_BIN`).
async fn stdout_throughput(
    bench: &Bench,
    rt: &Runtime,
    logs: &LogTargets,
    scheme: &str,
) -> Result<(f64, f64)> {
    let (api, bytes) = (&bench.daemon.api, bench.settings.stdout_bytes);
    let id = format!("stdout-{scheme}-{}", rt.shim_binary);
    let count = bytes.to_string();
    let head = bench
        .specs
        .spec(rt, &id, &["/bin/head", "-c", &count, "/dev/zero"]);
    let (fifos, _readers) = prepare(&bench.daemon, &id, rt.runtime, &head, None).await?;
    let log = logs.scratch.path().join(format!("{id}.log"));
    let uri = match scheme {
        "file" => format!("file://{}", log.display()),
        "binary" => format!("binary://{}", logs.discard_logger.display()),
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
        eprintln!("{}: {scheme}: {}", rt.name, status.message());
        api.delete_container(&id).await?;
        fifos.remove();
        return Ok((f64::NAN, f64::NAN));
    }
    let shim = shim_of(rt.shim_binary, &id).context("the task's shim")?;
    let reading = (scheme == "fifo").then(|| read_fifo(fifos.stdout(), bytes));
    let cpu_before = cpu_seconds(shim);
    let started = Instant::now();
    api.start_task(&id).await?;
    if let Some(reading) = reading {
        let got = tokio::task::spawn_blocking(move || reading.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the FIFO reader panicked"))??;
        if got < bytes {
            bail!("{id}: {got} of {bytes} bytes");
        }
    }
    api.wait(&id).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(shim) - cpu_before;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    delete(api, &id, fifos).await?;
    let _ = fs::remove_file(&log);
    Ok((bytes as f64 / (1 << 20) as f64 / seconds, cpu / gib))
}

/// The FIFO's reader for the stdout row: a thread of its own doing blocking reads of up to
/// `bytes`, as `cat` does, so that the row compares with the `cat` relay (a tokio reader in
/// this process, which also runs the gRPC client, cost a third of the rate). Returns the
/// bytes read.
fn read_fifo(path: PathBuf, bytes: u64) -> std::thread::JoinHandle<std::io::Result<u64>> {
    std::thread::spawn(move || {
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
}

/// The task API rows' labels, units and whether lower is better, in the order of
/// [`task_api_column`]'s values.
const TASK_API_LABELS: [(&str, &str, bool); 33] = [
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
    (
        "exit latency p50, detached task, nobody reading",
        "ms",
        true,
    ),
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

/// The task API rows from the two columns of [`task_api_column`], `tasks` idle tasks.
fn task_api_rows(columns: &[Vec<f64>], tasks: usize) -> Vec<Row> {
    TASK_API_LABELS
        .iter()
        .enumerate()
        .map(|(i, (label, unit, lower))| Row {
            label: label.replace("(N tasks)", &format!("({tasks} tasks)")),
            ours: columns[0][i],
            runc: columns[1][i],
            unit,
            lower_is_better: *lower,
        })
        .collect()
}

/// The OCI mode's rows for runc, then for crun ([`oci_mode`]).
async fn oci_rows(bench: &Bench) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Debian 12's crun 1.8 takes runtime-spec 1.0 only, and containerd 1.7 and later write
    // newer specs: crun refuses them under either shim ("unknown version specified").
    let version = bench.cd.server_version();
    let crun = version.starts_with("1.6") || version.starts_with("v1.6");
    if !crun {
        eprintln!(
            "== OCI mode (crun): not measured on containerd {version} (crun 1.8 refuses its specs)"
        );
    }
    for binary in ["runc", "crun"]
        .into_iter()
        .filter(|b| *b == "runc" || crun)
    {
        match oci_mode(bench, binary).await {
            Ok(more) => rows.extend(more),
            Err(err) => bail!("OCI mode ({binary}): {err:#}"),
        }
    }
    Ok(rows)
}

/// The OCI mode's rows (`OCI mode (<binary>): ...`): our shim with `BinaryName =
/// <binary>` in the "ours" column, containerd's runc-v2 shim running the same binary
/// (`BinaryName`, for crun) in the "runc" column, both on the same busybox root. With runc,
/// every row; with crun, the start latency.
async fn oci_mode(bench: &Bench, binary: &str) -> Result<Vec<Row>> {
    let config = bench.cd.dir().join(format!("bench-{binary}.toml"));
    fs::write(&config, format!("BinaryName = \"{binary}\"\n"))?;
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
        columns.push(oci_column(bench, rt, &tag, options, every_row).await?);
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

/// One shim's column of [`oci_mode`]'s rows (task ids `<tag>-...`, the runtime's
/// `options`): the start latency, then with `every_row` the rest. Both shims get the same
/// spec: runc-v2's, with no spec-mode annotation.
async fn oci_column(
    bench: &Bench,
    rt: &'static Runtime,
    tag: &str,
    options: Option<RuntimeOptions>,
    every_row: bool,
) -> Result<Vec<f64>> {
    // Start latency: Create + Start.
    let mut starts = Vec::new();
    for i in 0..bench.settings.starts {
        let id = format!("{tag}-start-{i}");
        let sleep = bench.specs.spec(&RUNTIMES[1], &id, &["/bin/sleep", "1000"]);
        let start = timed_start(&bench.daemon, &id, rt.runtime, &sleep, options.clone());
        starts.push(start.await?);
    }
    let (s50, s95, _) = ms(&mut starts);
    let mut values = vec![s50, s95];
    if !every_row {
        return Ok(values);
    }
    values.extend(oci_idle(bench, rt, tag, options.clone()).await?);
    // Run-to-delete of `/bin/true`, concurrency 1 and 8.
    for concurrency in [1usize, 8] {
        let specs = bench.specs.clone();
        let spec_of = move |id: &str| specs.spec(&RUNTIMES[1], id, &["/bin/true"]);
        let prefix = format!("{tag}-short-{concurrency}");
        let workers = (concurrency, bench.settings.cycles);
        let runtime = (rt.runtime, options.clone());
        values.push(run_to_delete(&bench.daemon, runtime, workers, prefix, spec_of).await?);
    }
    let pod = pod_memory(bench, (rt, &RUNTIMES[1]), 10, options).await?;
    values.push(pod.rss as f64 / 1024.0);
    Ok(values)
}

/// Idle memory of one shim (RSS and PSS, MiB), exec latency in its task, then exit latency
/// (Kill to Wait's answer) over a few idle tasks (ms, p50).
async fn oci_idle(
    bench: &Bench,
    rt: &Runtime,
    tag: &str,
    options: Option<RuntimeOptions>,
) -> Result<[f64; 4]> {
    let (api, address) = (&bench.daemon.api, &bench.daemon.address);
    let mut idle = Vec::new();
    let mut one = (0, 0);
    for i in 0..bench.settings.tasks.clamp(1, 20) {
        let id = format!("{tag}-idle-{i}");
        let sleep = bench.specs.spec(&RUNTIMES[1], &id, &["/bin/sleep", "1000"]);
        idle.push(run(&bench.daemon, &id, rt.runtime, &sleep, options.clone()).await?);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let shim = shim_of(rt.shim_binary, &id).context("the idle task's shim")?;
            let memory = shim_memory(rt.shim_binary, address);
            one = shim_pids(rt.shim_binary, address)
                .iter()
                .position(|&p| p == shim)
                .and_then(|i| memory.get(i).copied())
                .unwrap_or((0, 0));
        }
    }
    let first = &idle.first().context("no idle task")?.id;
    let mut execs = exec_latency(api, first, bench.settings.starts).await?;
    let mut exits = Vec::new();
    for task in idle {
        let started = Instant::now();
        api.kill(&task.id, 9, false).await?;
        api.wait(&task.id).await?;
        exits.push(started.elapsed().as_secs_f64() * 1000.0);
        delete(api, &task.id, task.fifos).await?;
    }
    Ok([
        one.0 as f64 / 1024.0,
        one.1 as f64 / 1024.0,
        ms(&mut execs).0,
        ms(&mut exits).0,
    ])
}

/// The drop-in rows (`drop-in (runc-v2 options): ...`): in the "ours" column, a second
/// private containerd whose `io.containerd.runc.v2` is our binary
/// ([`Containerd::start_drop_in`]); in the "runc" column, the main daemon's, containerd's
/// Go shim. Both get the same request: runc-v2's runtime name, its typed options
/// (`containerd.runc.v1.Options` with `BinaryName = "runc"`), runc-v2's spec and the same
/// busybox root: what a user sees who swaps the binary and changes nothing else. The
/// goals: idle RSS at most 0.3x, start latency at most 0.8x of runc-v2's.
async fn drop_in_rows(bench: &Bench) -> Result<Vec<Row>> {
    let cd = Containerd::start_drop_in(false).context("a containerd whose runc-v2 is ours")?;
    let drop_in = Bench::on(cd, bench.settings).await?;
    let options = Some(shim_demo::api::runc_options("runc"));
    let mut columns = Vec::new();
    let mut checkpoints = Vec::new();
    for (daemon, tag) in [(&drop_in, "dropin-ours"), (bench, "dropin-runc")] {
        eprintln!("== drop-in (runc-v2 options): {tag}");
        let runc_v2 = &RUNTIMES[1];
        let starts = oci_column(daemon, runc_v2, tag, options.clone(), false).await?;
        let [rss, ..] = oci_idle(daemon, runc_v2, tag, options.clone()).await?;
        columns.push((rss, starts[0]));
        checkpoints.push(checkpoint_column(daemon, tag, options.clone()).await?);
    }
    let mut rows = drop_in_memory_and_starts(&columns);
    let row = |label: &str, pick: fn(&(f64, f64)) -> f64| Row {
        label: format!("checkpoint (runc and CRIU 4.2): {label}"),
        ours: pick(&checkpoints[0]),
        runc: pick(&checkpoints[1]),
        unit: "ms",
        lower_is_better: true,
    };
    rows.push(row(
        "Checkpoint latency p50, leave running (goal: at most 1.0x)",
        |c| c.0,
    ));
    rows.push(row(
        "restore latency p50, Create + Start (goal: at most 1.0x)",
        |c| c.1,
    ));
    Ok(rows)
}

/// Checkpoint and restore latency (ms, p50) of a small idle container (`sleep`) through
/// one shim as runc-v2: `Checkpoint` leaving it running, its image at a path of ours (so
/// containerd writes nothing to its content store); then a new container restored from
/// that image (`Create` with `CriuImagePath`, then `Start`), killed and removed.
async fn checkpoint_column(
    bench: &Bench,
    tag: &str,
    options: Option<RuntimeOptions>,
) -> Result<(f64, f64)> {
    let (daemon, runc_v2) = (&bench.daemon, &RUNTIMES[1]);
    let samples = (bench.settings.starts / 10).clamp(3, 20);
    let id = format!("{tag}-checkpointed");
    let spec = bench.specs.spec(runc_v2, &id, &["/bin/sleep", "1000"]);
    let running = run(daemon, &id, RUNC, &spec, options.clone()).await?;
    let images = tempfile::tempdir()?;
    let (mut checkpoints, mut restores) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let image = images.path().join(i.to_string());
        let leave_running = CheckpointOptions {
            image_path: image.display().to_string(),
            ..Default::default()
        };
        let leave_running = prost_types::Any {
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            value: leave_running.write_to_bytes()?,
        };
        let started = Instant::now();
        daemon.api.checkpoint(&id, Some(leave_running)).await?;
        checkpoints.push(started.elapsed().as_secs_f64() * 1000.0);
        let restored = format!("{tag}-restored-{i}");
        let spec = bench
            .specs
            .spec(runc_v2, &restored, &["/bin/sleep", "1000"]);
        let (fifos, _readers) = prepare(daemon, &restored, RUNC, &spec, options.clone()).await?;
        let started = Instant::now();
        daemon
            .api
            .create_task_restoring(&restored, &fifos, &image)
            .await?;
        daemon.api.start_task(&restored).await?;
        restores.push(started.elapsed().as_secs_f64() * 1000.0);
        kill_and_delete(&daemon.api, &restored, fifos).await?;
    }
    kill_and_delete(&daemon.api, &id, running.fifos).await?;
    Ok((ms(&mut checkpoints).0, ms(&mut restores).0))
}

/// The drop-in's memory and start rows, from each column's (idle RSS, start p50).
fn drop_in_memory_and_starts(columns: &[(f64, f64)]) -> Vec<Row> {
    let row = |label: &str, unit, pick: fn(&(f64, f64)) -> f64| Row {
        label: format!("drop-in (runc-v2 options): {label}"),
        ours: pick(&columns[0]),
        runc: pick(&columns[1]),
        unit,
        lower_is_better: true,
    };
    vec![
        row("idle RSS, one shim (goal: at most 0.3x)", "MiB", |c| c.0),
        row("start latency p50 (goal: at most 0.8x)", "ms", |c| c.1),
    ]
}

/// Start latency of ours on cgroup v2 alone: a daemon whose shims have
/// `SAMPLE_SHIM_CGROUPS=v2` (this machine's cgroup2 mount, `/sys/fs/cgroup/unified`,
/// which needs no controller to hold a process), so that each task's process is born in
/// its cgroup (`clone3(CLONE_INTO_CGROUP)`). Starts with and without `linux.cgroupsPath`
/// alternate in the same daemon; their ratio is the goal (at most 1.3). runc-v2
/// has no such mode here (it uses the v1 hierarchies), so its column stays empty.
async fn cgroup_v2_starts(settings: &Settings, specs: &Specs) -> Result<Vec<Row>> {
    let cd = Containerd::start_with_env(&[("SAMPLE_SHIM_CGROUPS", "v2")])
        .context("a containerd whose shims use cgroup v2")?;
    let _fifos = RemoveOnDrop(shim_demo::fifo::daemon_dir(&cd.address));
    let daemon = Daemon::of(&cd).await?;
    let kinds = ("v2".to_string(), "v2plain".to_string());
    let (mut v2, mut plain) =
        paired_starts(&daemon, specs, &RUNTIMES[0], settings.starts, kinds).await?;
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

/// Pods over the CRI API, as a kubelet starts them: our shim in the OCI mode (the handler
/// `sample-oci`) and runc-v2 (`runc`), the same runc, in one private containerd with the CRI
/// plugin. Rows: a pod's start (RunPodSandbox, then CreateContainer and StartContainer of
/// one busybox container, until both run), p50; and the shims' RSS for a pod of 10
/// containers.
async fn cri_pods(settings: &Settings) -> Result<Vec<Row>> {
    let cd = Containerd::start_cri().context("a containerd with the CRI plugin")?;
    let mut cri = shim_demo::cri::Cri::connect(&cd.address).await?;
    let mut columns = Vec::new();
    for (handler, binary) in [
        (integration::OCI_HANDLER, "containerd-shim-sample-v2"),
        ("runc", "containerd-shim-runc-v2"),
    ] {
        eprintln!("== pods over the CRI API: {handler}");
        let mut starts = cri_pod_starts(&cd, &mut cri, handler, settings.starts).await?;
        let rss = cri_pod_of_ten(&cd, &mut cri, handler, binary).await?;
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

/// A pod named `name` in the namespace `bench`, whose containers log under `cd`'s
/// directory.
fn bench_pod(cd: &Containerd, name: &str) -> Result<shim_demo::cri::Pod> {
    let log_directory = cd.dir().join("pods").join(name);
    fs::create_dir_all(&log_directory)?;
    Ok(shim_demo::cri::Pod {
        name: name.to_string(),
        namespace: "bench".to_string(),
        log_directory: log_directory.display().to_string(),
        annotations: Default::default(),
        cgroup_parent: String::new(),
    })
}

/// A busybox container that sleeps, named `name`, logging to `<name>.log`.
fn sleeper(name: &str) -> shim_demo::cri::proto::ContainerConfig {
    shim_demo::cri::container(name, integration::image::BUSYBOX, &["sleep", "1000"], &[])
}

/// Start latencies (ms) of pods of `handler`, 3 to 20 of them (one per start run): from
/// RunPodSandbox until its one container is started; each pod is removed after.
async fn cri_pod_starts(
    cd: &Containerd,
    cri: &mut shim_demo::cri::Cri,
    handler: &str,
    starts: usize,
) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for i in 0..starts.clamp(3, 20) {
        let pod = bench_pod(cd, &format!("start-{handler}-{i}"))?;
        let started = Instant::now();
        let pod_id = cri.run_pod(&pod, handler).await?;
        let id = cri
            .create_container(&pod_id, &pod, sleeper("sleep"))
            .await?;
        cri.start_container(&id).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        cri.stop_pod(&pod_id).await?;
        cri.remove_pod(&pod_id).await?;
    }
    Ok(times)
}

/// The RSS (KiB) of the shims `binary` serving a pod of `handler` with 10 containers; the
/// pod is removed after.
async fn cri_pod_of_ten(
    cd: &Containerd,
    cri: &mut shim_demo::cri::Cri,
    handler: &str,
    binary: &str,
) -> Result<u64> {
    let pod = bench_pod(cd, &format!("ten-{handler}"))?;
    let pod_id = cri.run_pod(&pod, handler).await?;
    for i in 0..10 {
        let config = sleeper(&format!("sleep-{i}"));
        let id = cri.create_container(&pod_id, &pod, config).await?;
        cri.start_container(&id).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss: u64 = shim_memory(binary, &cd.address).iter().map(|m| m.0).sum();
    cri.stop_pod(&pod_id).await?;
    cri.remove_pod(&pod_id).await?;
    Ok(rss)
}

/// The element at quantile `p` of `sorted` (NaN when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The p50, p95 and p99 of `durations` (sorted in place).
fn ms(durations: &mut [f64]) -> (f64, f64, f64) {
    durations.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(durations, 0.5),
        percentile(durations, 0.95),
        percentile(durations, 0.99),
    )
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

/// One row of the results: a measure, for ours and for runc-v2.
struct Row {
    /// The measure, as the table names it.
    label: String,
    /// Our shim's figure.
    ours: f64,
    /// runc-v2's figure; NaN for a row of ours alone.
    runc: f64,
    /// The figures' unit.
    unit: &'static str,
    /// Whether a lower figure is better (latency, memory) or a higher one (throughput).
    lower_is_better: bool,
}

/// Writes `RESULTS.md` and `results.svg` into `out_dir`, and prints the markdown.
fn write_results(
    out_dir: &Path,
    rows: Vec<Row>,
    breakdowns: &[Vec<(&str, f64)>],
    settings: &Settings,
    containerd_version: &str,
) -> Result<()> {
    fs::create_dir_all(out_dir)?;
    let md = markdown(&rows, breakdowns, settings, containerd_version)?;
    fs::write(out_dir.join("RESULTS.md"), &md)?;
    let compared: Vec<Row> = rows.into_iter().filter(|r| !r.runc.is_nan()).collect();
    fs::write(out_dir.join("results.svg"), svg(&compared))?;
    print!("{md}");
    Ok(())
}

/// The machine's CPU model, its number of cores and the kernel's release.
fn machine() -> (String, usize, String) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let cores = cpuinfo.matches("processor").count();
    (cpu, cores, kernel.trim().to_string())
}

/// `RESULTS.md`: the run, the table of `rows`, and where one idle shim's memory is.
fn markdown(
    rows: &[Row],
    breakdowns: &[Vec<(&str, f64)>],
    settings: &Settings,
    containerd_version: &str,
) -> Result<String, std::fmt::Error> {
    let (cpu, cores, kernel) = machine();
    let mut md = String::new();
    writeln!(md, "# Benchmark results\n")?;
    writeln!(
        md,
        "`make bench{}`, {} UTC.\n",
        if settings.quick { " QUICK=1" } else { "" },
        now()
    )?;
    writeln!(md, "- machine: {cpu}, {cores} cores; kernel {kernel}")?;
    writeln!(
        md,
        "- containerd {containerd_version}; runc shim: that containerd's own `containerd-shim-runc-v2`"
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
    for row in rows {
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
    if let [ours, runc] = breakdowns {
        for ((label, a), (_, b)) in ours.iter().zip(runc) {
            writeln!(md, "| {label} | {a:.0} | {b:.0} |")?;
        }
    }
    Ok(md)
}

/// The time now, UTC, to the minute (`date -u`).
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
