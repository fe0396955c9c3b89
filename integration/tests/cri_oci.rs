//! Kubernetes pods in real containers: the CRI handler `sample-oci`, our shim in the OCI
//! mode with runc (`Containerd::start_cri` configures it), driven over the CRI API as a
//! kubelet drives it. The sandbox is a real container of the pause image; the containers
//! are busybox containers that join its namespaces; one shim serves the pod.
//! (critest checks the rest, against runc-v2 in the same run: `make conformance`.)
//!
//! A pod's whole life is one scenario for both modes (`integration::pod::two_containers`);
//! `cri.rs` runs it with the handler `sample`.

use std::{fs, time::Duration};

use integration::pod::{self, Mode};
use integration::{image, poll_until, proc, OCI_HANDLER};
use shim_demo::cri::{container, proto::ContainerState, Cri};

/// A pod's whole life in real containers: the pause image's `/pause` as the sandbox,
/// containers that share its pid and IPC namespaces and have mounts of their own, the
/// kubelet's log format, ExecSync, ContainerStats, StopContainer with a grace period, and
/// nothing left once the pod is removed.
#[tokio::test]
async fn a_pod_of_real_containers_lives_and_goes_in_one_shim() {
    pod::two_containers(Mode::Oci, &[]).await;
}

/// The pod's shim is SIGKILLed: containerd runs `containerd-shim-sample-v2 delete` for each
/// of its containers, which ends them through runc (`delete --force`) and unmounts them;
/// the pod is then removed as usual, and nothing is left.
#[tokio::test]
async fn a_killed_shim_leaves_no_container_process_mount_or_cgroup() {
    let Some((cd, mut cri)) = pod::start().await else {
        return;
    };
    let pod = pod::new(&cd, "crash");
    let pod_id = cri.run_pod(&pod, OCI_HANDLER).await.expect("RunPodSandbox");
    let app = container("app", image::BUSYBOX, &["sleep", "1000"], &[]);
    let app = pod::run_container(&mut cri, (&pod_id, &pod), app).await;
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
    pod::wait_container(&mut cri, &app, ContainerState::ContainerExited).await;
    cri.remove_container(&app).await.expect("RemoveContainer");
    pod::remove(&mut cri, &pod_id).await;
    cd.wait_shims_gone();
    for id in [&pod_id, &app] {
        assert!(
            pod::mounts_of(id).is_empty(),
            "{id}: {:?}",
            pod::mounts_of(id)
        );
    }
    // The containers' cgroups (their memory controller's, as the kernel listed them) are
    // gone. containerd 2.3 runs `delete` after a dead shim in the first container's bundle
    // only (the sandbox's), never in the app's, so runc's state and the app's (empty) cgroup
    // stay behind: containerd's own runc-v2 2.3.4 leaves the same (checked by hand with the
    // `runc` handler). There, only the sandbox's must be gone, and the app's hold nothing.
    let version = cd.server_version();
    let v2_3 = !(version.starts_with("1.")
        || version.starts_with("v1.")
        || version.starts_with("2.0")
        || version.starts_with("2.1")
        || version.starts_with("2.2"));
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
                if v2_3 && path.contains(app.as_str()) {
                    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    assert!(procs.trim().is_empty(), "{}: {procs}", dir.display());
                    integration::remove_cgroup_tree(&dir);
                    continue;
                }
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
    let Some((mut cd, mut cri)) = pod::start().await else {
        return;
    };
    // Pod one in a cgroup parent as a kubelet gives it (PodSandboxStats reads it).
    let parent = format!("/sample-oci-test-{}/pod-one", std::process::id());
    let (mut one, two) = (pod::new(&cd, "one"), pod::new(&cd, "two"));
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
        apps.push(pod::run_container(&mut cri, (pod_id, pod), app).await);
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

    let mut cri = pod::restart(&mut cd).await;
    for ((pod_id, _), app) in pods.iter().zip(&apps) {
        pod::assert_serves_again(&mut cri, pod_id, app).await;
    }
    for (pod_id, _) in &pods {
        pod::remove(&mut cri, pod_id).await;
    }
    cd.wait_shims_gone();
    for id in pods.iter().map(|(id, _)| id).chain(&apps) {
        assert!(
            pod::mounts_of(id).is_empty(),
            "{id}: {:?}",
            pod::mounts_of(id)
        );
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
