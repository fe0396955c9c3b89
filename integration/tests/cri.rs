//! Kubernetes pods through containerd's CRI plugin, driven the way a kubelet drives them.
//!
//! Each test starts a private containerd with the CRI plugin and our shim as the runtime
//! handler `sample` (`Containerd::start_cri`), then speaks the CRI API (`shim_demo::cri`)
//! on its socket: RunPodSandbox, CreateContainer, StartContainer, ExecSync, StopContainer,
//! RemoveContainer, StopPodSandbox, RemovePodSandbox. What a test checks is what a kubelet
//! and its user see: statuses, exit codes, the CRI log file, and on the host one shim per
//! pod, the sandbox's pause process, and nothing left once the pod is gone.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use integration::{cgroupfs, poll_until, proc, Containerd};
use shim_demo::cri::tonic::Code;
use shim_demo::cri::{
    container,
    proto::{self, ContainerState, PodSandboxState},
    Cri, Pod, HANDLER,
};

const IMAGE: &str = shim_demo::DEFAULT_IMAGE;

/// A pod named `name` whose containers log under the daemon's directory.
fn pod(cd: &Containerd, name: &str, annotations: &[(&str, &str)]) -> Pod {
    let log_directory = cd.dir().join("pods").join(name);
    fs::create_dir_all(&log_directory).expect("log directory");
    Pod {
        name: name.to_string(),
        namespace: "default".to_string(),
        log_directory: log_directory.display().to_string(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cgroup_parent: String::new(),
    }
}

/// The CRI log file's lines as (stream, text): `<time> <stream> <F|P> <text>`.
fn log_lines(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, ' ');
            let (_time, stream, _tag) = (fields.next()?, fields.next()?, fields.next()?);
            Some((stream.to_string(), fields.next().unwrap_or("").to_string()))
        })
        .collect()
}

/// The lines of one stream.
fn stream(lines: &[(String, String)], name: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|(s, _)| s == name)
        .map(|(_, t)| t.clone())
        .collect()
}

/// Live processes below `shim`, as (pid, comm).
fn processes_below(shim: i32) -> Vec<(i32, String)> {
    proc::descendants(shim)
        .into_iter()
        .filter(|&p| proc::stat(p).is_some_and(|s| s.0 != 'Z'))
        .map(|p| (p, proc::comm(p)))
        .collect()
}

/// The processes below `shim` once its one process is named `pause` (it is renamed when
/// the start-gate helper has run it), as (pid, comm).
fn pause_below(shim: i32) -> Vec<(i32, String)> {
    poll_until(
        Duration::from_secs(10),
        "the sandbox's pause process",
        || {
            let below = processes_below(shim);
            (below.len() == 1 && below[0].1 == "pause").then_some(below)
        },
    )
}

/// Polls the container's state until it is `state`.
async fn wait_container(cri: &mut Cri, id: &str, state: ContainerState) -> i32 {
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

/// Every file under `dir` that is a FIFO or a socket, and every mount below it.
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

/// The shim's socket path, from its command line (`-socket unix:///run/containerd/s/...`).
fn socket_of(shim: i32) -> PathBuf {
    let args = proc::cmdline(shim);
    let address = args
        .windows(2)
        .find(|w| w[0] == "-socket")
        .map(|w| w[1].clone())
        .expect("the shim's -socket");
    PathBuf::from(address.trim_start_matches("unix://"))
}

/// After a pod is removed: no shim, no socket, no bundle, no FIFO, no mount.
fn assert_nothing_left(cd: &Containerd, sockets: &[PathBuf]) {
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

/// The whole life of a pod with two containers, as a kubelet runs it.
async fn one_pod_two_containers(pod_annotations: &[(&str, &str)]) {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = pod(&cd, "web", pod_annotations);

    // The sandbox: READY, one shim, whose only process is the pause.
    let pod_id = cri.run_pod(&pod, HANDLER).await.expect("RunPodSandbox");
    let status = cri.pod_status(&pod_id).await.expect("PodSandboxStatus");
    assert_eq!(
        status.state,
        PodSandboxState::SandboxReady as i32,
        "{status:?}"
    );
    let shim = cd.the_shim();
    let socket = socket_of(shim);
    let below = pause_below(shim);
    let pause = below[0].0;

    // Two containers, each running its spec's command, in the pod's shim.
    let app = container(
        "app",
        IMAGE,
        &[
            "sh",
            "-c",
            "echo out-1; echo err-1 >&2; echo out-2; exec sleep 1000",
        ],
        &[("GREETING", "hello")],
    );
    let app = cri
        .create_container(&pod_id, &pod, app)
        .await
        .expect("CreateContainer app");
    cri.start_container(&app).await.expect("StartContainer app");
    // A process that ignores SIGTERM: StopContainer must SIGKILL it after the grace period.
    let stubborn = container(
        "stubborn",
        IMAGE,
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.2; done",
        ],
        &[],
    );
    let stubborn = cri
        .create_container(&pod_id, &pod, stubborn)
        .await
        .expect("CreateContainer stubborn");
    cri.start_container(&stubborn)
        .await
        .expect("StartContainer stubborn");
    for id in [&app, &stubborn] {
        wait_container(&mut cri, id, ContainerState::ContainerRunning).await;
    }
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
        for (key, value) in pod_annotations {
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

    // The CRI log file: exactly what the container wrote, stream by stream.
    let log = Path::new(&pod.log_directory).join("app.log");
    let lines = poll_until(Duration::from_secs(10), "app's three log lines", || {
        let lines = log_lines(&log);
        (lines.len() >= 3).then_some(lines)
    });
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(stream(&lines, "stdout"), ["out-1", "out-2"], "{lines:?}");
    assert_eq!(stream(&lines, "stderr"), ["err-1"], "{lines:?}");

    // ExecSync: output and exit code of a process run in the container, with its env.
    let exec = cri
        .exec_sync(
            &app,
            &["sh", "-c", "echo $GREETING; echo oops >&2; exit 3"],
            10,
        )
        .await
        .expect("ExecSync");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "oops\n");
    assert_eq!(exec.exit_code, 3);

    // ContainerStats decodes our metrics: the app's `sleep` has memory.
    let (_cpu, memory) = cri.container_stats(&app).await.expect("ContainerStats");
    assert!(memory > 0, "ContainerStats says no memory");

    // StopContainer: SIGTERM ends the app (143); the stubborn one gets SIGKILL after 2 s.
    cri.stop_container(&app, 10)
        .await
        .expect("StopContainer app");
    assert_eq!(
        wait_container(&mut cri, &app, ContainerState::ContainerExited).await,
        143
    );
    let started = Instant::now();
    cri.stop_container(&stubborn, 2)
        .await
        .expect("StopContainer stubborn");
    assert_eq!(
        wait_container(&mut cri, &stubborn, ContainerState::ContainerExited).await,
        137
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "SIGKILL came before the grace period ended: {:?}",
        started.elapsed()
    );
    let below = processes_below(shim);
    assert_eq!(
        below,
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
}

#[tokio::test]
async fn a_pod_with_two_containers_runs_in_one_shim_from_start_to_removal() {
    one_pod_two_containers(&[]).await;
}

/// The spec-mode annotation as a pod annotation: containerd copies it to the sandbox and to
/// every container. The sandbox still runs the pause, the containers their specs.
#[tokio::test]
async fn the_spec_mode_annotation_given_to_the_pod_breaks_nothing() {
    one_pod_two_containers(&[("com.example.sample.process", "spec")]).await;
}

/// A container created after its pod's shim died: a clear error, nothing leaked, and the
/// pod can still be stopped and removed.
#[tokio::test]
async fn a_container_whose_sandbox_s_shim_is_gone_is_refused() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = pod(&cd, "crashed", &[]);
    let pod_id = cri.run_pod(&pod, HANDLER).await.expect("RunPodSandbox");
    let shim = cd.the_shim();
    let socket = socket_of(shim);
    let pause = pause_below(shim)[0].0;
    // SAFETY: a plain system call on the shim we just identified.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    wait_pod(&mut cri, &pod_id, PodSandboxState::SandboxNotready).await;
    let config = container("late", IMAGE, &["sleep", "4242"], &[]);
    let err = match cri.create_container(&pod_id, &pod, config).await {
        Ok(id) => match cri.start_container(&id).await {
            Ok(()) => panic!("a container of a pod whose shim is gone started"),
            Err(err) => {
                let _ = cri.remove_container(&id).await;
                err
            }
        },
        Err(err) => err,
    };
    // containerd refuses before the shim is asked: 1.6/1.7 "failed to get sandbox container
    // task: no running task found" (NotFound), 2.1 "sandbox container ... is not running".
    let expected = if cd.server_version().starts_with("1.") {
        Code::NotFound
    } else {
        Code::Unknown
    };
    assert_eq!(err.code(), expected, "{err:?}");
    assert!(
        err.message().contains("sandbox container"),
        "the error does not say the sandbox is gone: {err:?}"
    );
    assert!(
        !proc::all_pids()
            .into_iter()
            .any(|p| proc::cmdline(p) == ["sleep", "4242"]),
        "the late container's process ran"
    );
    cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
    cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
    assert_nothing_left(&cd, &[socket]);
    // The orphaned pause was killed by the shim's `delete`, which containerd ran.
    poll_until(Duration::from_secs(5), "the pause gone", || {
        proc::stat(pause).is_none_or(|s| s.0 == 'Z').then_some(())
    });
}

/// Polls the sandbox's state until it is `state`.
async fn wait_pod(cri: &mut Cri, id: &str, state: PodSandboxState) {
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

/// Two pods started at once: two shims, each with its pause, neither disturbed by the other.
#[tokio::test]
async fn two_pods_started_at_once_get_a_shim_each() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let (one, two) = (pod(&cd, "one", &[]), pod(&cd, "two", &[]));
    let (mut a, mut b) = (cri.clone(), cri.clone());
    let (id_one, id_two) = tokio::join!(a.run_pod(&one, HANDLER), b.run_pod(&two, HANDLER));
    let (id_one, id_two) = (id_one.expect("pod one"), id_two.expect("pod two"));
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 2, "{shims:?}");
    let sockets: Vec<PathBuf> = shims.iter().map(|&s| socket_of(s)).collect();
    let mut by_shim = HashMap::new();
    for &shim in &shims {
        by_shim.insert(shim, pause_below(shim)[0].0);
    }
    let mut cri = cri;
    for id in [&id_one, &id_two] {
        let status = cri.pod_status(id).await.expect("status");
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    }
    // Removing pod one leaves pod two and its pause alone.
    cri.stop_pod(&id_one).await.expect("stop one");
    cri.remove_pod(&id_one).await.expect("remove one");
    let left = poll_until(Duration::from_secs(5), "one shim left", || {
        let shims = cd.shim_pids();
        (shims.len() == 1).then_some(shims)
    });
    assert!(proc::alive(by_shim[&left[0]]), "pod two's pause died");
    let status = cri.pod_status(&id_two).await.expect("status");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    cri.stop_pod(&id_two).await.expect("stop two");
    cri.remove_pod(&id_two).await.expect("remove two");
    assert_nothing_left(&cd, &sockets);
}

/// containerd restarts (an upgrade, a crash) while a pod runs: the pod's shim keeps its
/// containers, the new daemon reconnects to it for each of them, and the pod works on.
#[tokio::test]
async fn a_pod_survives_a_containerd_restart() {
    let Some(mut cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = pod(&cd, "steady", &[]);
    let pod_id = cri.run_pod(&pod, HANDLER).await.expect("RunPodSandbox");
    let app = container("app", IMAGE, &["sleep", "1000"], &[]);
    let app = cri
        .create_container(&pod_id, &pod, app)
        .await
        .expect("CreateContainer");
    cri.start_container(&app).await.expect("StartContainer");
    wait_container(&mut cri, &app, ContainerState::ContainerRunning).await;
    let shim = cd.the_shim();
    let socket = socket_of(shim);
    let pid = cri.container_pid(&app).await.expect("pid");

    cd.stop_daemon();
    cd.start_daemon();
    // The CRI plugin answers "server is not initialized yet" while it recovers its pods.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cri = loop {
        match Cri::connect(&cd.address).await {
            Ok(cri) => break cri,
            Err(err) if Instant::now() < deadline => {
                eprintln!("not yet: {err:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the CRI API never answered again: {err:#}"),
        }
    };
    wait_pod(&mut cri, &pod_id, PodSandboxState::SandboxReady).await;
    wait_container(&mut cri, &app, ContainerState::ContainerRunning).await;
    assert_eq!(cd.shim_pids(), vec![shim], "the same shim serves the pod");
    assert_eq!(cri.container_pid(&app).await.expect("pid"), pid);
    let exec = cri
        .exec_sync(&app, &["sh", "-c", "echo still here"], 10)
        .await
        .expect("ExecSync after the restart");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "still here\n");

    cri.stop_container(&app, 10).await.expect("StopContainer");
    assert_eq!(
        wait_container(&mut cri, &app, ContainerState::ContainerExited).await,
        143
    );
    cri.remove_container(&app).await.expect("RemoveContainer");
    cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
    cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
    assert_nothing_left(&cd, &[socket]);
}

/// A pod in the cgroup a kubelet made for it (`cgroup_parent`; the CRI plugin with the
/// cgroupfs driver, `disable_cgroup = false`): the sandbox and each container in a cgroup
/// of their own below it, with their limits; UpdateContainerResources changes them;
/// ContainerStats and PodSandboxStats read them; an OOM kill is the container's
/// `OOMKilled`; nothing of ours is left in the pod's cgroup after the pod.
#[tokio::test]
async fn a_pod_lives_in_the_cgroup_its_kubelet_made() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    // The kubelet makes the pod's cgroup before RunPodSandbox (in every hierarchy), and
    // removes it after.
    let parent = format!("/{}/kubepods/pod-cg", cd.namespace());
    let made: Vec<PathBuf> = cgroupfs::hierarchies()
        .into_iter()
        .map(|root| root.join(parent.trim_start_matches('/')))
        .collect();
    for dir in &made {
        cgroupfs::make(dir);
    }
    let mut pod = pod(&cd, "cg", &[]);
    pod.cgroup_parent = parent.clone();
    let pod_id = cri.run_pod(&pod, HANDLER).await.expect("RunPodSandbox");
    let pause = cri.pod_pid(&pod_id).await.expect("the sandbox's pid");
    assert!(
        cgroupfs::of_process(pause).contains(&format!("{parent}/{pod_id}")),
        "the pause is in {:?}",
        cgroupfs::of_process(pause)
    );

    let mut app = container("app", IMAGE, &["sh", "-c", "sleep 1000 & wait"], &[]);
    app.linux = Some(proto::LinuxContainerConfig {
        resources: Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let app = cri
        .create_container(&pod_id, &pod, app)
        .await
        .expect("CreateContainer app");
    cri.start_container(&app).await.expect("StartContainer app");
    wait_container(&mut cri, &app, ContainerState::ContainerRunning).await;
    let app_cgroup = format!("{parent}/{app}");
    let app_pid = cri.container_pid(&app).await.expect("app's pid");
    assert!(
        cgroupfs::of_process(app_pid).contains(&app_cgroup),
        "{:?}",
        cgroupfs::of_process(app_pid)
    );
    assert_eq!(cgroupfs::memory_limit(&app_cgroup), 256 << 20);
    // In every hierarchy, as under runc.
    let paths = cgroupfs::of_process(app_pid);
    assert!(paths.iter().all(|p| *p == app_cgroup), "{paths:?}");

    // UpdateContainerResources: the kubelet resizes the container.
    cri.update_container_resources(
        &app,
        proto::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        },
    )
    .await
    .expect("UpdateContainerResources");
    assert_eq!(cgroupfs::memory_limit(&app_cgroup), 128 << 20);
    assert_eq!(cgroupfs::cpu_quota(&app_cgroup), 50_000);

    // The kubelet's CPU manager pins a container (static policy): cpuset cpus and mems.
    let last_cpu = cgroupfs::cpus_online().saturating_sub(1);
    cri.update_container_resources(
        &app,
        proto::LinuxContainerResources {
            cpuset_cpus: last_cpu.to_string(),
            cpuset_mems: "0".into(),
            ..Default::default()
        },
    )
    .await
    .expect("UpdateContainerResources with a cpuset");
    assert_eq!(
        cgroupfs::read("cpuset", &app_cgroup, "cpuset.cpus").trim(),
        last_cpu.to_string()
    );
    assert_eq!(
        cgroupfs::read("cpuset", &app_cgroup, "cpuset.mems").trim(),
        "0"
    );
    assert_eq!(
        proc::status_field(app_pid, "Cpus_allowed_list").as_deref(),
        Some(last_cpu.to_string().as_str()),
        "the container's process runs on the pinned CPU only"
    );

    // ContainerStats and PodSandboxStats: the figures of the cgroups.
    let (_cpu, memory) = cri.container_stats(&app).await.expect("ContainerStats");
    assert!(memory > 0, "ContainerStats says no memory");
    let stats = cri
        .pod_sandbox_stats(&pod_id)
        .await
        .expect("PodSandboxStats");
    let linux = stats.linux.expect("Linux pod stats");
    let containers: Vec<&str> = linux
        .containers
        .iter()
        .filter_map(|c| c.attributes.as_ref().map(|a| a.id.as_str()))
        .collect();
    assert!(containers.contains(&app.as_str()), "{containers:?}");

    // A container that wants more than its limit: OOMKilled, 137.
    let mut hog = container(
        "hog",
        IMAGE,
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
        &[],
    );
    hog.linux = Some(proto::LinuxContainerConfig {
        resources: Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = cri
        .create_container(&pod_id, &pod, hog)
        .await
        .expect("CreateContainer hog");
    cri.start_container(&hog).await.expect("StartContainer hog");
    assert_eq!(
        wait_container(&mut cri, &hog, ContainerState::ContainerExited).await,
        137
    );
    let status = cri.container_status(&hog).await.expect("ContainerStatus");
    assert_eq!(status.reason, "OOMKilled", "{status:?}");

    for id in [&app, &hog] {
        cri.stop_container(id, 2).await.expect("StopContainer");
        cri.remove_container(id).await.expect("RemoveContainer");
    }
    cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
    cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
    // Only the kubelet's own cgroup is left, empty: it removes it.
    for dir in &made {
        let below: Vec<String> = fs::read_dir(dir)
            .expect("the pod's cgroup")
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.path().display().to_string())
            .collect();
        assert!(below.is_empty(), "left in the pod's cgroup: {below:?}");
        fs::remove_dir(dir).expect("the kubelet removes the pod's cgroup");
    }
    assert!(!proc::alive(app_pid) && !proc::alive(pause));
}
