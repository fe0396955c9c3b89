//! An exec whose command leaves a background child behind must not hang `ExecSync`.
//!
//! containerd's own CRI suite (`TestContainerDrainExecIOAfterExit`): `sh -c 'sleep 365d &'`
//! exits at once, but its child holds the exec's stdout and stderr open. containerd waits
//! for their end-of-file, up to its drain timeout, then deletes the exec; the shim must then
//! stop its copies and close the FIFOs, or containerd never sees end-of-file and `ExecSync`
//! never returns. Here in a pod of each of our modes (the host's `sh`, and a busybox
//! container through runc), as in containerd's test: the first `ExecSync` returns within its
//! timeout + 10 s (with containerd's "failed to drain" error where containerd has a drain
//! timeout, or the exit code), no FIFO of the exec is left open in the shim, and a second
//! exec whose child is short-lived (`sleep 2s &`) succeeds.

use std::{
    fs,
    time::{Duration, Instant},
};

use integration::{image, proc, Containerd, OCI_HANDLER};
use shim_demo::cri::{container, Cri, Pod, HANDLER};

/// The FIFOs the shim `pid` has open (containerd's exec FIFOs live under its state dir).
fn fifos_of(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.contains("/io/") || target.contains("fifo"))
        .collect()
}

#[tokio::test]
async fn an_exec_that_leaves_a_background_child_does_not_hang_exec_sync() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let version = cd.server_version();
    if version.starts_with("1.6") {
        // Measured: its CRI plugin waits for the exec's end-of-file with no deadline (no
        // `drain_exec_sync_io_timeout`), and never deletes the exec: runc-v2 hangs as ours.
        eprintln!(
            "\n!!!!!!!! NOT RUN on containerd {version}: its ExecSync waits for the exec's \
             output without a drain timeout under every shim; `make test-matrix` runs this \
             test on 1.7 and 2.1\n"
        );
        return;
    }
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    for (handler, image) in [
        ("runc", image::BUSYBOX),
        (HANDLER, shim_demo::DEFAULT_IMAGE),
        (OCI_HANDLER, image::BUSYBOX),
    ] {
        let log_directory = cd.dir().join("pods").join(handler);
        fs::create_dir_all(&log_directory).expect("log directory");
        let pod = Pod {
            name: format!("drain-{handler}"),
            namespace: "default".to_string(),
            log_directory: log_directory.display().to_string(),
            annotations: Default::default(),
            cgroup_parent: String::new(),
        };
        let pod_id = cri.run_pod(&pod, handler).await.expect("RunPodSandbox");
        let app = container("app", image, &["sh", "-c", "sleep 365d"], &[]);
        let app = cri
            .create_container(&pod_id, &pod, app)
            .await
            .expect("CreateContainer");
        cri.start_container(&app).await.expect("StartContainer");
        // containerd's runc-v2 (the reference, same daemon) is not ours to look into.
        let shim = (handler != "runc").then(|| cd.the_shim());
        let before = shim.map(fifos_of);

        let timeout = 5;
        let started = Instant::now();
        let first = tokio::time::timeout(
            Duration::from_secs(timeout as u64 + 10),
            cri.exec_sync(&app, &["sh", "-c", "sleep 365d &"], timeout),
        )
        .await;
        let took = started.elapsed();
        eprintln!(
            "{handler}: ExecSync of `sh -c 'sleep 365d &'` answered after {took:?}: {first:?}"
        );
        let answer = match first {
            Ok(answer) => answer,
            // containerd 2.3's own runc-v2 shim hangs here (measured: its output is never
            // closed); the reference is reported, ours is held to the rule.
            Err(_) if handler == "runc" => {
                eprintln!(
                    "\n!!!!!!!! runc-v2 of containerd {version}: ExecSync hung for {timeout} s \
                     + 10 s; the reference fails this test here\n"
                );
                cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
                cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
                continue;
            }
            Err(_) => panic!(
                "{handler}: ExecSync hung for {timeout} s + 10 s: the exec's output was never closed"
            ),
        };
        if let Err(status) = &answer {
            assert!(
                status.message().contains("failed to drain exec process"),
                "{handler}: {status:?}"
            );
        }
        assert_eq!(
            shim.map(fifos_of),
            before,
            "{handler}: the exec's FIFOs are still open"
        );

        let second = cri
            .exec_sync(&app, &["sh", "-c", "sleep 2s &"], 10)
            .await
            .unwrap_or_else(|e| panic!("{handler}: should drain in time: {e:?}"));
        assert_eq!(second.exit_code, 0, "{handler}: {second:?}");

        cri.stop_container(&app, 0).await.expect("StopContainer");
        cri.remove_container(&app).await.expect("RemoveContainer");
        cri.stop_pod(&pod_id).await.expect("StopPodSandbox");
        cri.remove_pod(&pod_id).await.expect("RemovePodSandbox");
        if let Some(shim) = shim {
            integration::poll_until(Duration::from_secs(10), "the pod's shim to exit", || {
                (!proc::alive(shim)).then_some(())
            });
        }
    }
}
