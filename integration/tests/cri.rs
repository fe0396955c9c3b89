//! Kubernetes pods through containerd's CRI plugin, driven the way a kubelet drives them.
//!
//! Each test starts a private containerd with the CRI plugin and our shim as the runtime
//! handler `sample` (`Containerd::start_cri`), then speaks the CRI API (`shim_demo::cri`)
//! on its socket: RunPodSandbox, CreateContainer, StartContainer, ExecSync, StopContainer,
//! RemoveContainer, StopPodSandbox, RemovePodSandbox. What a test checks is what a kubelet
//! and its user see: statuses, exit codes, the CRI log file, and on the host one shim per
//! pod, the sandbox's pause process, and nothing left once the pod is gone.
//!
//! A pod's whole life is one scenario for both modes (`integration::pod::two_containers`);
//! `cri_oci.rs` runs it with the handler `sample-oci`.

use std::{collections::HashMap, fs, path::PathBuf, time::Duration};

use integration::pod::{self, Mode};
use integration::{cgroupfs, poll_until, proc};
use shim_demo::cri::tonic::Code;
use shim_demo::cri::{
    container,
    proto::{self, ContainerState, PodSandboxState},
    HANDLER,
};

const IMAGE: &str = shim_demo::DEFAULT_IMAGE;

#[tokio::test]
async fn a_pod_with_two_containers_runs_in_one_shim_from_start_to_removal() {
    pod::two_containers(Mode::Host, &[]).await;
}

/// The spec-mode annotation as a pod annotation: containerd copies it to the sandbox and to
/// every container. The sandbox still runs the pause, the containers their specs.
#[tokio::test]
async fn the_spec_mode_annotation_given_to_the_pod_breaks_nothing() {
    pod::two_containers(Mode::Host, &[("com.example.sample.process", "spec")]).await;
}

/// A container created after its pod's shim died: a clear error, nothing leaked, and the
/// pod can still be stopped and removed.
#[tokio::test]
async fn a_container_whose_sandbox_s_shim_is_gone_is_refused() {
    let Some((cd, mut cri)) = pod::start().await else {
        return;
    };
    let pod = pod::new(&cd, "crashed");
    let pod_id = cri.run_pod(&pod, HANDLER).await.expect("RunPodSandbox");
    let shim = cd.the_shim();
    let socket = pod::socket_of(shim);
    let pause = pod::pause_below(shim)[0].0;
    // SAFETY: a plain system call on the shim we just identified.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    pod::wait_pod(&mut cri, &pod_id, PodSandboxState::SandboxNotready).await;
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
    pod::remove(&mut cri, &pod_id).await;
    pod::assert_nothing_left(&cd, &[socket]);
    // The orphaned pause was killed by the shim's `delete`, which containerd ran.
    poll_until(Duration::from_secs(5), "the pause gone", || {
        proc::stat(pause).is_none_or(|s| s.0 == 'Z').then_some(())
    });
}

/// Two pods started at once: two shims, each with its pause, neither disturbed by the other.
#[tokio::test]
async fn two_pods_started_at_once_get_a_shim_each() {
    let Some((cd, mut cri)) = pod::start().await else {
        return;
    };
    let (one, two) = (pod::new(&cd, "one"), pod::new(&cd, "two"));
    let (mut a, mut b) = (cri.clone(), cri.clone());
    let (id_one, id_two) = tokio::join!(a.run_pod(&one, HANDLER), b.run_pod(&two, HANDLER));
    let (id_one, id_two) = (id_one.expect("pod one"), id_two.expect("pod two"));
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 2, "{shims:?}");
    let sockets: Vec<PathBuf> = shims.iter().map(|&s| pod::socket_of(s)).collect();
    let mut by_shim = HashMap::new();
    for &shim in &shims {
        by_shim.insert(shim, pod::pause_below(shim)[0].0);
    }
    for id in [&id_one, &id_two] {
        let status = cri.pod_status(id).await.expect("status");
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    }
    // Removing pod one leaves pod two and its pause alone.
    pod::remove(&mut cri, &id_one).await;
    let left = poll_until(Duration::from_secs(5), "one shim left", || {
        let shims = cd.shim_pids();
        (shims.len() == 1).then_some(shims)
    });
    assert!(proc::alive(by_shim[&left[0]]), "pod two's pause died");
    let status = cri.pod_status(&id_two).await.expect("status");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    pod::remove(&mut cri, &id_two).await;
    pod::assert_nothing_left(&cd, &sockets);
}

/// containerd restarts (an upgrade, a crash) while a pod runs: the pod's shim keeps its
/// containers, the new daemon reconnects to it for each of them, and the pod works on.
#[tokio::test]
async fn a_pod_survives_a_containerd_restart() {
    let Some((mut cd, mut cri)) = pod::start().await else {
        return;
    };
    let pod = pod::new(&cd, "steady");
    let pod_id = cri.run_pod(&pod, HANDLER).await.expect("RunPodSandbox");
    let app = container("app", IMAGE, &["sleep", "1000"], &[]);
    let app = pod::run_container(&mut cri, (&pod_id, &pod), app).await;
    let shim = cd.the_shim();
    let socket = pod::socket_of(shim);
    let pid = cri.container_pid(&app).await.expect("pid");

    let mut cri = pod::restart(&mut cd).await;
    pod::assert_serves_again(&mut cri, &pod_id, &app).await;
    assert_eq!(cd.shim_pids(), vec![shim], "the same shim serves the pod");
    assert_eq!(cri.container_pid(&app).await.expect("pid"), pid);

    assert_eq!(pod::stop(&mut cri, &app, 10).await, 143);
    cri.remove_container(&app).await.expect("RemoveContainer");
    pod::remove(&mut cri, &pod_id).await;
    pod::assert_nothing_left(&cd, &[socket]);
}

/// A pod in the cgroup a kubelet made for it (`cgroup_parent`; the CRI plugin with the
/// cgroupfs driver, `disable_cgroup = false`): the sandbox and each container in a cgroup
/// of their own below it, with their limits; UpdateContainerResources changes them;
/// ContainerStats and PodSandboxStats read them; an OOM kill is the container's
/// `OOMKilled`; nothing of ours is left in the pod's cgroup after the pod.
#[tokio::test]
async fn a_pod_lives_in_the_cgroup_its_kubelet_made() {
    let Some((cd, mut cri)) = pod::start().await else {
        return;
    };
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
    let mut pod = pod::new(&cd, "cg");
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
    let app = pod::run_container(&mut cri, (&pod_id, &pod), app).await;
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
        pod::wait_container(&mut cri, &hog, ContainerState::ContainerExited).await,
        137
    );
    let status = cri.container_status(&hog).await.expect("ContainerStatus");
    assert_eq!(status.reason, "OOMKilled", "{status:?}");

    for id in [&app, &hog] {
        cri.stop_container(id, 2).await.expect("StopContainer");
        cri.remove_container(id).await.expect("RemoveContainer");
    }
    pod::remove(&mut cri, &pod_id).await;
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
