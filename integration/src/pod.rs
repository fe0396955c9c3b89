//! Kubernetes pods for the CRI tests (`tests/cri.rs`, the host mode; `tests/cri_oci.rs`,
//! the OCI mode), driven over the CRI API as a kubelet drives them.
//!
//! - [`start`] a private containerd with the CRI plugin and a client on its socket;
//! - [`new`] a pod, [`run_container`] a container of it, [`remove`] the pod, and the waits
//!   on their CRI states ([`wait_container`], [`wait_pod`]);
//! - [`two_containers`]: the one scenario both modes run, a pod's whole life with two
//!   containers; what differs between the modes is in [`Mode`];
//! - what a test checks on the host afterwards: [`assert_nothing_left`], [`mounts_of`].

use std::{
    fs,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use shim_demo::cri::{
    container,
    proto::{ContainerConfig, ContainerState, PodSandboxState},
    Cri, Pod, HANDLER,
};

use crate::{image, poll_until, proc, Containerd, OCI_HANDLER};

/// How our shim runs a pod: one CRI runtime handler each, both configured by
/// [`Containerd::start_cri`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The handler `sample` ([`HANDLER`]): the containers' processes run on the host, and the
    /// sandbox is a `pause` that the shim's start-gate helper runs.
    Host,
    /// The handler `sample-oci` ([`OCI_HANDLER`]): real containers through runc; the sandbox
    /// is the pause image's `/pause`, the containers busybox containers in its namespaces.
    Oci,
}

impl Mode {
    /// The CRI runtime handler a kubelet names for this mode.
    pub fn handler(self) -> &'static str {
        match self {
            Mode::Host => HANDLER,
            Mode::Oci => OCI_HANDLER,
        }
    }

    /// The image of the pod's containers: the host mode ignores its contents, the OCI mode
    /// needs a root filesystem with a shell.
    pub fn image(self) -> &'static str {
        match self {
            Mode::Host => image::IMAGE,
            Mode::Oci => image::BUSYBOX,
        }
    }

    /// The app container's command: two lines on stdout and one on stderr, then a process
    /// that SIGTERM ends with 143. In a container the shell traps SIGTERM itself, so that
    /// the exit code does not depend on how runc reports a signalled process.
    fn app_script(self) -> &'static str {
        match self {
            Mode::Host => "echo out-1; echo err-1 >&2; echo out-2; exec sleep 1000",
            Mode::Oci => {
                "trap 'exit 143' TERM; echo out-1; echo err-1 >&2; echo out-2; \
                 while :; do sleep 0.2; done"
            }
        }
    }

    /// The sandbox's process of `pod_id`, served by `shim`, once it runs, checked for what
    /// this mode makes of it.
    async fn pause(self, cri: &mut Cri, pod_id: &str, shim: i32) -> i32 {
        match self {
            // The shim's only process, renamed `pause` once the start-gate helper ran it.
            Mode::Host => pause_below(shim)[0].0,
            Mode::Oci => {
                let pause = cri.pod_pid(pod_id).await.expect("the sandbox's pid");
                // `runc start` returns once `runc init` was told to go: its `exec` of the
                // entrypoint may still be under way (an empty command line meanwhile).
                poll_until(
                    Duration::from_secs(5),
                    "the pause image's entrypoint",
                    || (proc::cmdline(pause) == ["/pause"]).then_some(()),
                );
                assert_eq!(
                    proc::ppid(pause),
                    Some(shim),
                    "the sandbox is the shim's child"
                );
                pause
            }
        }
    }

    /// A container's namespaces against its sandbox's. The host mode runs processes on the
    /// host: nothing to compare. The OCI mode's containers have the pod's pid and IPC
    /// namespaces (as the containers' specs ask), the node's network and UTS (a host-network
    /// pod), and mounts of their own.
    fn assert_namespaces(self, app_pid: i32, pause: i32) {
        if self == Mode::Host {
            return;
        }
        for kind in ["ipc", "pid", "uts", "net"] {
            assert_eq!(
                namespace(app_pid, kind),
                namespace(pause, kind),
                "the pod's {kind}"
            );
        }
        assert_ne!(
            namespace(app_pid, "pid"),
            namespace(1, "pid"),
            "not the host's pid namespace"
        );
        assert_ne!(
            namespace(app_pid, "mnt"),
            namespace(pause, "mnt"),
            "its own mounts"
        );
    }

    /// What an ExecSync in the app runs between printing its env and exiting: in a
    /// container, a look at its root and at the pod's pid 1.
    fn exec_probe(self) -> &'static str {
        match self {
            Mode::Host => "",
            Mode::Oci => "ls /pause 2>&1; cat /proc/1/cmdline; ",
        }
    }

    /// The ExecSync's stdout, `hello` and what [`Mode::exec_probe`] printed.
    fn assert_exec_stdout(self, out: &str) {
        match self {
            Mode::Host => assert_eq!(out, "hello\n"),
            Mode::Oci => {
                assert!(out.starts_with("hello\n"), "{out}");
                assert!(
                    out.contains("No such file"),
                    "the container's root, not the sandbox's: {out}"
                );
                assert!(
                    out.ends_with("/pause\0"),
                    "pid 1 is the pod's pause: {out:?}"
                );
            }
        }
    }
}

/// A private containerd with the CRI plugin, and a CRI client on its socket; `None` when
/// the developer asked to skip.
pub async fn start() -> Option<(Containerd, Cri)> {
    let cd = Containerd::start_cri()?;
    let cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    Some((cd, cri))
}

/// A pod named `name` whose containers log under the daemon's directory.
pub fn new(cd: &Containerd, name: &str) -> Pod {
    let log_directory = cd.dir().join("pods").join(name);
    fs::create_dir_all(&log_directory).expect("log directory");
    Pod {
        name: name.to_string(),
        namespace: "default".to_string(),
        log_directory: log_directory.display().to_string(),
        annotations: Default::default(),
        cgroup_parent: String::new(),
    }
}

/// Creates and starts the container `config` in pod `pod_id`, and waits until it runs;
/// returns its id.
pub async fn run_container(
    cri: &mut Cri,
    (pod_id, pod): (&str, &Pod),
    config: ContainerConfig,
) -> String {
    let name = config
        .metadata
        .as_ref()
        .map_or_else(String::new, |m| m.name.clone());
    let id = cri
        .create_container(pod_id, pod, config)
        .await
        .unwrap_or_else(|err| panic!("CreateContainer {name}: {err:?}"));
    cri.start_container(&id)
        .await
        .unwrap_or_else(|err| panic!("StartContainer {name}: {err:?}"));
    wait_container(cri, &id, ContainerState::ContainerRunning).await;
    id
}

/// StopContainer with a grace period of `grace_secs`, then waits until the container has
/// exited; returns its exit code.
pub async fn stop(cri: &mut Cri, id: &str, grace_secs: i64) -> i32 {
    cri.stop_container(id, grace_secs)
        .await
        .unwrap_or_else(|err| panic!("StopContainer {id}: {err:?}"));
    wait_container(cri, id, ContainerState::ContainerExited).await
}

/// StopPodSandbox, then RemovePodSandbox, as a kubelet ends a pod.
pub async fn remove(cri: &mut Cri, pod_id: &str) {
    cri.stop_pod(pod_id).await.expect("StopPodSandbox");
    cri.remove_pod(pod_id).await.expect("RemovePodSandbox");
}

/// Polls the container's state until it is `state`; returns its exit code.
pub async fn wait_container(cri: &mut Cri, id: &str, state: ContainerState) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cri.container_status(id).await.expect("ContainerStatus");
        if status.state == state as i32 {
            return status.exit_code;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached {state:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the sandbox's state until it is `state`.
pub async fn wait_pod(cri: &mut Cri, id: &str, state: PodSandboxState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cri.pod_status(id).await.expect("PodSandboxStatus");
        if status.state == state as i32 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pod {id} never reached {state:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Restarts containerd (an upgrade, a crash) and returns a client once the CRI API answers
/// again: the CRI plugin answers "server is not initialized yet" while it recovers its pods.
pub async fn restart(cd: &mut Containerd) -> Cri {
    cd.stop_daemon();
    cd.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Cri::connect(&cd.address).await {
            Ok(cri) => return cri,
            Err(err) if Instant::now() < deadline => {
                eprintln!("not yet: {err:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the CRI API never answered again: {err:#}"),
        }
    }
}

/// After a restart: pod `pod_id` is READY again, its container `app` runs and answers an
/// ExecSync.
pub async fn assert_serves_again(cri: &mut Cri, pod_id: &str, app: &str) {
    wait_pod(cri, pod_id, PodSandboxState::SandboxReady).await;
    wait_container(cri, app, ContainerState::ContainerRunning).await;
    let exec = cri
        .exec_sync(app, &["sh", "-c", "echo still here"], 10)
        .await
        .expect("ExecSync after the restart");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "still here\n");
}

/// The CRI log file's lines as (stream, tag, text): `<time> <stream> <F|P> <text>`.
pub fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, ' ');
            let (_time, stream, tag) = (fields.next()?, fields.next()?, fields.next()?);
            Some((
                stream.to_string(),
                tag.to_string(),
                fields.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// The texts of the lines of one stream.
pub fn stream(lines: &[(String, String, String)], name: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|(s, _, _)| s == name)
        .map(|(_, _, t)| t.clone())
        .collect()
}

/// Live processes below `shim`, as (pid, comm).
pub fn processes_below(shim: i32) -> Vec<(i32, String)> {
    proc::descendants(shim)
        .into_iter()
        .filter(|&p| proc::stat(p).is_some_and(|s| s.0 != 'Z'))
        .map(|p| (p, proc::comm(p)))
        .collect()
}

/// The processes below `shim` once its one process is named `pause` (it is renamed when
/// the start-gate helper has run it), as (pid, comm).
pub fn pause_below(shim: i32) -> Vec<(i32, String)> {
    poll_until(
        Duration::from_secs(10),
        "the sandbox's pause process",
        || {
            let below = processes_below(shim);
            (below.len() == 1 && below[0].1 == "pause").then_some(below)
        },
    )
}

/// The shim's socket path, from its command line (`-socket unix:///run/containerd/s/...`).
pub fn socket_of(shim: i32) -> PathBuf {
    let args = proc::cmdline(shim);
    let address = args
        .windows(2)
        .find(|w| w[0] == "-socket")
        .map(|w| w[1].clone())
        .expect("the shim's -socket");
    PathBuf::from(address.trim_start_matches("unix://"))
}

/// Every file under `dir` that is a FIFO, and every mount below it.
fn leftovers_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(&path, found);
            } else if kind.is_fifo() {
                found.push(format!("FIFO {}", path.display()));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, &mut found);
    let prefix = dir.display().to_string();
    for line in fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if let Some(point) = line.split(' ').nth(4) {
            if point.starts_with(&prefix) {
                found.push(format!("mount {point}"));
            }
        }
    }
    found
}

/// After a pod is removed: no shim, no socket, no bundle, no FIFO, no mount.
pub fn assert_nothing_left(cd: &Containerd, sockets: &[PathBuf]) {
    cd.wait_shims_gone();
    for socket in sockets {
        assert!(!socket.exists(), "socket {} left behind", socket.display());
    }
    let bundles = cd.dir().join("state/io.containerd.runtime.v2.task/k8s.io");
    let left: Vec<_> = fs::read_dir(&bundles)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "bundles left: {left:?}");
    let left = leftovers_under(cd.dir());
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Mount points that mention `id` (a container's root filesystem, its shm).
pub fn mounts_of(id: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mount| mount.contains(id))
        .map(str::to_string)
        .collect()
}

/// The namespace `kind` (`uts`, `ipc`, `pid`) of process `pid`, as the kernel names it.
fn namespace(pid: i32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

/// The whole life of a pod with two containers, as a kubelet runs it, in `mode`, with
/// `annotations` on the pod: the sandbox READY in one shim; an app and a container that
/// ignores SIGTERM, both in that shim; the annotations in every bundle's spec; the
/// kubelet's log file; ExecSync; ContainerStats; StopContainer with a grace period
/// (SIGTERM, then SIGKILL); and once the pod is removed, no process, shim, socket, bundle,
/// FIFO or mount left.
pub async fn two_containers(mode: Mode, annotations: &[(&str, &str)]) {
    let Some((cd, mut cri)) = start().await else {
        return;
    };
    let mut pod = new(&cd, "web");
    pod.annotations = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    // The sandbox: READY, one shim, and its pause.
    let pod_id = cri
        .run_pod(&pod, mode.handler())
        .await
        .expect("RunPodSandbox");
    let status = cri.pod_status(&pod_id).await.expect("PodSandboxStatus");
    assert_eq!(
        status.state,
        PodSandboxState::SandboxReady as i32,
        "{status:?}"
    );
    let shim = cd.the_shim();
    let socket = socket_of(shim);
    let pause = mode.pause(&mut cri, &pod_id, shim).await;

    // Two containers, each running its spec's command, in the pod's shim.
    let app = container(
        "app",
        mode.image(),
        &["sh", "-c", mode.app_script()],
        &[("GREETING", "hello")],
    );
    let app = run_container(&mut cri, (&pod_id, &pod), app).await;
    // A process that ignores SIGTERM: StopContainer must SIGKILL it after the grace period.
    let stubborn = container(
        "stubborn",
        mode.image(),
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.2; done",
        ],
        &[],
    );
    let stubborn = run_container(&mut cri, (&pod_id, &pod), stubborn).await;
    // The pod's annotations reached the shim, in the sandbox's spec and the containers'.
    for id in [&pod_id, &app, &stubborn] {
        let spec = cd
            .dir()
            .join("state/io.containerd.runtime.v2.task/k8s.io")
            .join(id.as_str())
            .join("config.json");
        let spec: serde_json::Value =
            serde_json::from_slice(&fs::read(&spec).expect("the bundle's config.json"))
                .expect("a JSON spec");
        for (key, value) in annotations {
            assert_eq!(spec["annotations"][*key], *value, "{id}: {key}");
        }
    }
    let app_pid = cri.container_pid(&app).await.expect("app's pid");
    let stubborn_pid = cri.container_pid(&stubborn).await.expect("stubborn's pid");
    assert_eq!(
        cd.shim_pids(),
        vec![shim],
        "a pod's containers share its shim"
    );
    assert!(proc::alive(pause), "the pause process lives on");
    mode.assert_namespaces(app_pid, pause);

    // The CRI log file: exactly what the container wrote, stream by stream, in full lines.
    let log = Path::new(&pod.log_directory).join("app.log");
    let lines = poll_until(Duration::from_secs(10), "app's three log lines", || {
        let lines = log_lines(&log);
        (lines.len() >= 3).then_some(lines)
    });
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(stream(&lines, "stdout"), ["out-1", "out-2"], "{lines:?}");
    assert_eq!(stream(&lines, "stderr"), ["err-1"], "{lines:?}");
    assert!(lines.iter().all(|(_, tag, _)| tag == "F"), "{lines:?}");

    // ExecSync: output and exit code of a process run in the container, with its env.
    let script = format!("echo $GREETING; echo oops >&2; {}exit 3", mode.exec_probe());
    let exec = cri
        .exec_sync(&app, &["sh", "-c", &script], 10)
        .await
        .expect("ExecSync");
    mode.assert_exec_stdout(&String::from_utf8_lossy(&exec.stdout));
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "oops\n");
    assert_eq!(exec.exit_code, 3);

    // ContainerStats decodes our metrics: the app's process has memory.
    let (_cpu, memory) = cri.container_stats(&app).await.expect("ContainerStats");
    assert!(memory > 0, "ContainerStats says no memory");

    // StopContainer: SIGTERM ends the app (143); the stubborn one gets SIGKILL after 2 s.
    assert_eq!(stop(&mut cri, &app, 10).await, 143);
    let started = Instant::now();
    assert_eq!(stop(&mut cri, &stubborn, 2).await, 137);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "SIGKILL came before the grace period ended: {:?}",
        started.elapsed()
    );
    assert_eq!(
        processes_below(shim),
        vec![(pause, "pause".to_string())],
        "only the pause is left"
    );

    for id in [&app, &stubborn] {
        cri.remove_container(id).await.expect("RemoveContainer");
    }
    assert!(proc::alive(shim), "the shim serves the sandbox still");
    cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
    let status = cri.pod_status(&pod_id).await.expect("PodSandboxStatus");
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
    assert_nothing_left(&cd, &[socket]);
    for pid in [pause, app_pid, stubborn_pid] {
        assert!(!proc::alive(pid), "process {pid} outlived its pod");
    }
    for id in [&pod_id, &app, &stubborn] {
        assert!(mounts_of(id).is_empty(), "{id}: {:?}", mounts_of(id));
    }
}
