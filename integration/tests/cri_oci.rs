//! Kubernetes pods in real containers: the CRI handler `sample-oci`, our shim in the OCI
//! mode with runc (`Containerd::start_cri` configures it), driven over the CRI API as a
//! kubelet drives it. The sandbox is a real container of the pause image; the containers
//! are busybox containers that join its namespaces; one shim serves the pod.
//! (critest checks the rest, against runc-v2 in the same run: `make conformance`.)

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use integration::{image, poll_until, proc, Containerd, OCI_HANDLER};
use shim_demo::cri::{
    container,
    proto::{ContainerState, PodSandboxState},
    Cri, Pod,
};

/// A pod named `name` whose containers log under the daemon's directory.
fn pod(cd: &Containerd, name: &str) -> Pod {
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

/// Polls the container's state until it is `state`; returns its exit code.
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

/// Mount points that mention `id` (a container's root filesystem, its shm).
fn mounts_of(id: &str) -> Vec<String> {
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

/// A pod's whole life in real containers: the pause image's `/pause` as the sandbox,
/// containers that share its IPC and UTS namespaces and have a pid namespace of their own,
/// the kubelet's log format, ExecSync, ContainerStats, StopContainer with a grace period,
/// and nothing left once the pod is removed.
#[tokio::test]
async fn a_pod_of_real_containers_lives_and_goes_in_one_shim() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = pod(&cd, "real");
    let pod_id = cri.run_pod(&pod, OCI_HANDLER).await.expect("RunPodSandbox");
    let status = cri.pod_status(&pod_id).await.expect("PodSandboxStatus");
    assert_eq!(
        status.state,
        PodSandboxState::SandboxReady as i32,
        "{status:?}"
    );
    let shim = cd.the_shim();
    let pause = cri.pod_pid(&pod_id).await.expect("the sandbox's pid");
    assert_eq!(
        proc::cmdline(pause),
        ["/pause"],
        "the pause image's entrypoint"
    );
    assert_eq!(
        proc::ppid(pause),
        Some(shim),
        "the sandbox is the shim's child"
    );

    let app = container(
        "app",
        image::BUSYBOX,
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; echo pid $$; echo err-1 >&2; while :; do sleep 0.2; done",
        ],
        &[("GREETING", "hello")],
    );
    let app = cri
        .create_container(&pod_id, &pod, app)
        .await
        .expect("CreateContainer");
    cri.start_container(&app).await.expect("StartContainer");
    let stubborn = container(
        "stubborn",
        image::BUSYBOX,
        &["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"],
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
    assert_eq!(cd.shim_pids(), vec![shim], "one shim serves the pod");
    let app_pid = cri.container_pid(&app).await.expect("app's pid");
    // The pod's namespaces (pid and IPC the pod's, as the containers' specs ask; the node's
    // network and UTS: a host-network pod), and mounts of its own.
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

    // The kubelet's log format, each stream.
    let log = Path::new(&pod.log_directory).join("app.log");
    let lines = poll_until(Duration::from_secs(10), "app's two log lines", || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    });
    assert!(lines.contains(" stdout F pid "), "{lines}");
    assert!(lines.contains(" stderr F err-1\n"), "{lines}");

    // ExecSync runs inside: the container's root, its env, the pod's pid namespace (whose
    // pid 1 is the pause).
    let exec = cri
        .exec_sync(
            &app,
            &[
                "sh",
                "-c",
                "echo $GREETING; ls /pause 2>&1; cat /proc/1/cmdline; exit 3",
            ],
            10,
        )
        .await
        .expect("ExecSync");
    let out = String::from_utf8_lossy(&exec.stdout);
    assert!(out.starts_with("hello\n"), "{out}");
    assert!(
        out.contains("No such file"),
        "the container's root, not the sandbox's: {out}"
    );
    assert!(
        out.ends_with("/pause\0"),
        "pid 1 is the pod's pause: {out:?}"
    );
    assert_eq!(exec.exit_code, 3);
    let (_cpu, memory) = cri.container_stats(&app).await.expect("ContainerStats");
    assert!(memory > 0, "ContainerStats: no memory");

    // StopContainer: SIGTERM (143, from its trap), SIGKILL after the grace period (137).
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
        "{:?}",
        started.elapsed()
    );

    for id in [&app, &stubborn] {
        cri.remove_container(id).await.expect("RemoveContainer");
    }
    cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
    cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
    cd.wait_shims_gone();
    for pid in [pause, app_pid] {
        assert!(!proc::alive(pid), "process {pid} outlived its pod");
    }
    for id in [&pod_id, &app, &stubborn] {
        assert!(mounts_of(id).is_empty(), "{id}: {:?}", mounts_of(id));
    }
}

/// The pod's shim is SIGKILLed: containerd runs `containerd-shim-sample-v2 delete` for each
/// of its containers, which ends them through runc (`delete --force`) and unmounts them;
/// the pod is then removed as usual, and nothing is left.
#[tokio::test]
async fn a_killed_shim_leaves_no_container_process_mount_or_cgroup() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = pod(&cd, "crash");
    let pod_id = cri.run_pod(&pod, OCI_HANDLER).await.expect("RunPodSandbox");
    let app = container("app", image::BUSYBOX, &["sleep", "1000"], &[]);
    let app = cri
        .create_container(&pod_id, &pod, app)
        .await
        .expect("CreateContainer");
    cri.start_container(&app).await.expect("StartContainer");
    wait_container(&mut cri, &app, ContainerState::ContainerRunning).await;
    let (pause, app_pid) = (
        cri.pod_pid(&pod_id).await.expect("pid"),
        cri.container_pid(&app).await.expect("pid"),
    );
    let cgroups: Vec<String> = [pause, app_pid]
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
        .collect();
    let shim = cd.the_shim();
    // SAFETY: a plain system call on the shim we just identified.
    unsafe { libc::kill(shim, libc::SIGKILL) };

    // The dead shim's orphans are re-parented to the nearest subreaper: containerd on a
    // node, this test process here (the harness is a subreaper). A pod's pid 1 (the pause)
    // dies only once every process of its namespace is reaped, so the test reaps them, as
    // containerd would.
    let daemon = cd.daemon_pid();
    poll_until(Duration::from_secs(15), "the containers to go", || {
        for pid in proc::children(std::process::id() as i32) {
            if pid != daemon && proc::stat(pid).is_some_and(|s| s.0 == 'Z') {
                // SAFETY: reaps a zombie child of ours that is not the daemon.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
        (!proc::alive(pause) && !proc::alive(app_pid)).then_some(())
    });
    wait_container(&mut cri, &app, ContainerState::ContainerExited).await;
    cri.remove_container(&app).await.expect("RemoveContainer");
    cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
    cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
    cd.wait_shims_gone();
    for id in [&pod_id, &app] {
        assert!(mounts_of(id).is_empty(), "{id}: {:?}", mounts_of(id));
    }
    // The containers' cgroups (their memory controller's, as the kernel listed them) are gone.
    let roots: Vec<_> = integration::cgroup_dirs("/").into_iter().collect();
    for text in cgroups {
        for line in text
            .lines()
            .filter(|l| l.contains("memory") || l.starts_with("0::"))
        {
            let path = line
                .splitn(3, ':')
                .nth(2)
                .unwrap_or("/")
                .trim_start_matches('/');
            if path.is_empty() {
                continue;
            }
            for root in &roots {
                let dir = root.join(path);
                assert!(
                    !dir.join("cgroup.procs").exists(),
                    "cgroup left: {}",
                    dir.display()
                );
            }
        }
    }
}

/// Two pods at once get a shim each; UpdateContainerResources reaches the container's cgroup
/// (through `runc update`); PodSandboxStats has the pod's memory; containerd restarts while
/// they run, and both pods go on; then they go, and nothing is left.
#[tokio::test]
async fn two_pods_take_updates_and_survive_a_containerd_restart() {
    let Some(mut cd) = Containerd::start_cri() else {
        return;
    };
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    // Pod one in a cgroup parent as a kubelet gives it (PodSandboxStats reads it).
    let parent = format!("/sample-oci-test-{}/pod-one", std::process::id());
    let (mut one, two) = (pod(&cd, "one"), pod(&cd, "two"));
    one.cgroup_parent = parent.clone();
    let mut other = Cri::connect(&cd.address).await.expect("a second client");
    let (first, second) = tokio::join!(
        cri.run_pod(&one, OCI_HANDLER),
        other.run_pod(&two, OCI_HANDLER)
    );
    let pods = [
        (first.expect("RunPodSandbox one"), &one),
        (second.expect("RunPodSandbox two"), &two),
    ];
    let mut apps = Vec::new();
    for (pod_id, pod) in &pods {
        let app = container("app", image::BUSYBOX, &["sleep", "1000"], &[]);
        let app = cri
            .create_container(pod_id, pod, app)
            .await
            .expect("CreateContainer");
        cri.start_container(&app).await.expect("StartContainer");
        wait_container(&mut cri, &app, ContainerState::ContainerRunning).await;
        apps.push(app);
    }
    assert_eq!(cd.shim_pids().len(), 2, "a shim per pod");

    // UpdateContainerResources: the memory limit of the container's own cgroup.
    cri.update_container_resources(
        &apps[0],
        shim_demo::cri::proto::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        },
    )
    .await
    .expect("UpdateContainerResources");
    let pid = cri.container_pid(&apps[0]).await.expect("pid");
    let memory = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                .then(|| path.to_string())
        })
        .expect("the container's memory cgroup");
    assert_eq!(integration::cgroupfs::memory_limit(&memory), 64 << 20);
    let stats = cri
        .pod_sandbox_stats(&pods[0].0)
        .await
        .expect("PodSandboxStats");
    let linux = stats.linux.expect("Linux pod stats");
    assert!(
        linux
            .memory
            .and_then(|m| m.working_set_bytes)
            .is_some_and(|w| w.value > 0),
        "the pod's memory"
    );

    cd.stop_daemon();
    cd.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cri = loop {
        match Cri::connect(&cd.address).await {
            Ok(cri) => break cri,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("the CRI API never answered again: {err:#}"),
        }
    };
    for ((pod_id, _), app) in pods.iter().zip(&apps) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cri
            .pod_status(pod_id)
            .await
            .is_ok_and(|s| s.state == PodSandboxState::SandboxReady as i32)
        {
            assert!(
                Instant::now() < deadline,
                "pod {pod_id} not READY after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_container(&mut cri, app, ContainerState::ContainerRunning).await;
        let exec = cri
            .exec_sync(app, &["sh", "-c", "echo still here"], 10)
            .await
            .expect("ExecSync after the restart");
        assert_eq!(String::from_utf8_lossy(&exec.stdout), "still here\n");
    }
    for (pod_id, _) in &pods {
        cri.stop_pod(pod_id).await.expect("StopPodSandbox");
        cri.remove_pod(pod_id).await.expect("RemovePodSandbox");
    }
    cd.wait_shims_gone();
    for id in pods.iter().map(|(id, _)| id).chain(&apps) {
        assert!(mounts_of(id).is_empty(), "{id}: {:?}", mounts_of(id));
    }
    // The pod's parent is the kubelet's to remove; runc removed the pod's cgroups in it.
    let top = parent
        .rsplit_once('/')
        .map_or(parent.as_str(), |(top, _)| top)
        .to_string();
    for dir in integration::cgroup_dirs(&top) {
        integration::remove_cgroup_tree(&dir);
    }
}
