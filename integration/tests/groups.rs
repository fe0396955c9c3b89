//! Several containers in one shim, through `ctr`: the grouping annotations a client other
//! than the CRI plugin can set, and the pod rules the shim enforces whoever the client.

use integration::{poll_until, stderr, Containerd};
use std::time::Duration;

const GROUP: &str = "com.example.sample.group=g";
const SANDBOX: &str = "io.kubernetes.cri.container-type=sandbox";
const CONTAINER: &str = "io.kubernetes.cri.container-type=container";
const OF_POD1: &str = "io.kubernetes.cri.sandbox-id=pod1";

/// `ctr run -d` in spec mode with extra annotations, in `namespace`.
fn run(
    cd: &Containerd,
    namespace: &str,
    id: &str,
    annotations: &[&str],
    args: &[&str],
) -> std::process::Output {
    let mut full = vec!["--namespace", namespace];
    let mut run = cd.run_args("-d", id, args);
    for annotation in annotations {
        run.splice(2..2, ["--annotation", annotation]);
    }
    // What the CRI plugin marks as a pod's runs as host processes only when asked by name.
    let host_mode = cd.dir().join("host-mode.toml");
    std::fs::write(&host_mode, "mode = \"host\"\n").expect("write the options");
    let host_mode = host_mode.display().to_string();
    if annotations
        .iter()
        .any(|a| a.starts_with("io.kubernetes.cri.container-type"))
    {
        run.splice(2..2, ["--runtime-config-path", &host_mode]);
    }
    full.extend(run);
    cd.ctr_output(&full)
}

/// A task's status in `namespace`.
fn status_in(cd: &Containerd, namespace: &str, id: &str) -> Option<String> {
    let out = cd.ctr_ok(&["--namespace", namespace, "task", "ls"]);
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&id))
        .and_then(|f| f.get(2).map(|s| s.to_string()))
}

#[test]
fn containers_of_one_group_share_a_shim_until_the_last_is_deleted() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    for id in ["first", "second"] {
        let out = run(&cd, cd.namespace(), id, &[GROUP], &["sleep", "1000"]);
        assert!(out.status.success(), "ctr run {id}: {}", stderr(&out));
        cd.wait_status(id, "RUNNING");
    }
    let shim = cd.the_shim();
    // Each container keeps its own processes, exec ids and exit.
    let out = cd.ctr_output(&[
        "task",
        "exec",
        "--exec-id",
        "e",
        "second",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    cd.ctr_ok(&["task", "kill", "first"]);
    cd.wait_status("first", "STOPPED");
    assert_eq!(
        cd.task_status("second").map(|s| s.1),
        Some("RUNNING".into())
    );
    cd.ctr_ok(&["task", "rm", "first"]);
    cd.ctr_ok(&["container", "rm", "first"]);
    // containerd asked the shim to shut down after the delete: it stays, serving `second`
    // (an exec proves it answers).
    let out = cd.ctr_output(&["task", "exec", "--exec-id", "f", "second", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        cd.shim_pids(),
        vec![shim],
        "the shim left with a container to serve"
    );
    assert_eq!(
        cd.task_status("second").map(|s| s.1),
        Some("RUNNING".into())
    );
    cd.kill_and_remove("second", "KILL");
    cd.wait_shims_gone();
}

/// Two containers of one group started at once: both may launch a daemon; one serves, the
/// other finds it serving and bows out, and both containers end up in the one shim.
#[test]
fn containers_of_one_group_started_at_once_share_one_shim() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    cd.import_image();
    let cd_ref = &cd;
    std::thread::scope(|scope| {
        let runs: Vec<_> = ["x", "y", "z"]
            .map(|id| {
                scope.spawn(move || {
                    (
                        id,
                        run(cd_ref, cd_ref.namespace(), id, &[GROUP], &["sleep", "1000"]),
                    )
                })
            })
            .into_iter()
            .collect();
        for run in runs {
            let (id, out) = run.join().expect("ctr run thread");
            assert!(out.status.success(), "ctr run {id}: {}", stderr(&out));
        }
    });
    for id in ["x", "y", "z"] {
        cd.wait_status(id, "RUNNING");
    }
    cd.the_shim();
    for id in ["x", "y", "z"] {
        cd.kill_and_remove(id, "KILL");
    }
    cd.wait_shims_gone();
}

#[test]
fn a_container_naming_another_namespace_s_sandbox_is_refused_and_the_pod_untouched() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    for namespace in ["a", "b"] {
        cd.import_image_into(namespace);
    }
    let out = run(&cd, "a", "pod1", &[SANDBOX, OF_POD1], &["false"]);
    assert!(out.status.success(), "the sandbox: {}", stderr(&out));
    poll_until(Duration::from_secs(10), "pod1 RUNNING", || {
        (status_in(&cd, "a", "pod1").as_deref() == Some("RUNNING")).then_some(())
    });
    let shim = cd.the_shim();

    // Namespace b has no pod1: its own shim, which refuses the container and exits.
    let out = run(
        &cd,
        "b",
        "intruder",
        &[CONTAINER, OF_POD1],
        &["sleep", "1000"],
    );
    let message = stderr(&out);
    assert!(!out.status.success(), "ctr run succeeded: {message}");
    assert!(message.contains("is not in this shim"), "{message}");
    if cd.server_version().starts_with("1.") {
        assert!(message.contains("failed precondition"), "{message}");
    }
    assert_eq!(status_in(&cd, "b", "intruder"), None, "no task is left");
    cd.ctr_output(&["--namespace", "b", "container", "rm", "intruder"]);
    poll_until(Duration::from_secs(5), "b's shim gone", || {
        (cd.shim_pids() == vec![shim]).then_some(())
    });

    // The pod is untouched, and in its own namespace a container joins its shim.
    assert_eq!(status_in(&cd, "a", "pod1").as_deref(), Some("RUNNING"));
    let out = run(&cd, "a", "app", &[CONTAINER, OF_POD1], &["sleep", "1000"]);
    assert!(
        out.status.success(),
        "the pod's container: {}",
        stderr(&out)
    );
    poll_until(Duration::from_secs(10), "app RUNNING", || {
        (status_in(&cd, "a", "app").as_deref() == Some("RUNNING")).then_some(())
    });
    assert_eq!(
        cd.shim_pids(),
        vec![shim],
        "the container joined the pod's shim"
    );
    for id in ["app", "pod1"] {
        cd.ctr_ok(&["--namespace", "a", "task", "kill", "--signal", "KILL", id]);
        poll_until(Duration::from_secs(10), "STOPPED", || {
            (status_in(&cd, "a", id).as_deref() == Some("STOPPED")).then_some(())
        });
        cd.ctr_ok(&["--namespace", "a", "task", "rm", id]);
        cd.ctr_ok(&["--namespace", "a", "container", "rm", id]);
    }
    cd.wait_shims_gone();
}

#[test]
fn an_unknown_container_type_is_an_invalid_argument() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let odd = "io.kubernetes.cri.container-type=podsandbox";
    let out = run(&cd, cd.namespace(), "odd", &[odd], &["true"]);
    let message = stderr(&out);
    assert!(!out.status.success(), "ctr run succeeded: {message}");
    assert!(message.contains("podsandbox"), "{message}");
    if cd.server_version().starts_with("1.") {
        assert!(message.contains("invalid argument"), "{message}");
    }
    assert_eq!(cd.task_status("odd"), None, "no task is left");
    cd.ctr_output(&["container", "rm", "odd"]);
    cd.wait_shims_gone();
}

/// `Pause` stops one container's processes, not its neighbours' in the same shim; `Kill
/// --all` and `Pids` keep to the container too.
#[test]
fn pause_kill_all_and_pids_of_one_container_leave_its_neighbour_alone() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    // `mine` survives SIGTERM (a handler), its `sleep`s do not: `kill --all` shows itself.
    let mine = "trap 'echo TERM' TERM; sleep 1000 & sleep 1000 & while :; do sleep 1; done";
    let theirs = "sleep 1000 & sleep 1000 & wait";
    let mut inits = Vec::new();
    for (id, script) in [("mine", mine), ("theirs", theirs)] {
        let out = run(&cd, cd.namespace(), id, &[GROUP], &["sh", "-c", script]);
        assert!(out.status.success(), "ctr run {id}: {}", stderr(&out));
        inits.push(cd.wait_status(id, "RUNNING"));
    }
    let listed = |id: &str| -> Vec<i32> {
        cd.ctr_ok(&["task", "ps", id])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let sleeps = |id: &str| -> Vec<i32> {
        poll_until(Duration::from_secs(5), "two sleeps", || {
            let sleeps: Vec<i32> = listed(id)
                .into_iter()
                .filter(|&p| integration::proc::cmdline(p) == ["sleep", "1000"])
                .collect();
            (sleeps.len() == 2).then_some(sleeps)
        })
    };
    let (my_sleeps, their_sleeps) = (sleeps("mine"), sleeps("theirs"));
    let (mine_listed, theirs_listed) = (listed("mine"), listed("theirs"));
    assert!(
        mine_listed.iter().all(|p| !theirs_listed.contains(p)),
        "ctr task ps mixes the two: {mine_listed:?} {theirs_listed:?}"
    );
    // Each container is in a cgroup of its own (`/<namespace>/<id>`), frozen or not.
    let frozen = |id: &str| integration::cgroupfs::frozen(&format!("/{}/{id}", cd.namespace()));
    cd.ctr_ok(&["task", "pause", "mine"]);
    assert!(frozen("mine"), "mine is frozen");
    assert!(!frozen("theirs"), "the neighbour was frozen too");
    let in_cgroup = |id: &str, pids: &[i32]| {
        let path = format!("/{}/{id}", cd.namespace());
        let procs = integration::cgroupfs::read("freezer", &path, "cgroup.procs");
        pids.iter()
            .all(|p| procs.lines().any(|l| l == p.to_string()))
    };
    assert!(in_cgroup("mine", &my_sleeps) && in_cgroup("mine", &inits[..1]));
    assert!(in_cgroup("theirs", &their_sleeps) && in_cgroup("theirs", &inits[1..]));
    cd.ctr_ok(&["task", "resume", "mine"]);
    cd.ctr_ok(&["task", "kill", "--all", "--signal", "TERM", "mine"]);
    poll_until(Duration::from_secs(5), "mine's sleeps gone", || {
        my_sleeps
            .iter()
            .all(|&p| !integration::proc::alive(p))
            .then_some(())
    });
    assert!(
        integration::proc::alive(inits[0]),
        "mine's init handles TERM"
    );
    assert!(
        their_sleeps
            .iter()
            .chain(&inits[1..])
            .all(|&p| integration::proc::alive(p)),
        "kill --all reached the neighbour"
    );
    for id in ["mine", "theirs"] {
        cd.ctr_output(&["task", "kill", "--signal", "KILL", id]);
        cd.wait_status(id, "STOPPED");
        cd.ctr_ok(&["task", "rm", id]);
        cd.ctr_ok(&["container", "rm", id]);
    }
    cd.wait_shims_gone();
}

/// After the shared shim of two containers dies, containerd runs `delete` in each
/// container's bundle; each `delete` kills its own container's processes only.
#[test]
fn delete_after_a_crash_of_the_shared_shim_touches_only_its_own_container() {
    let Some(mut cd) = Containerd::start() else {
        return;
    };
    let mut inits = Vec::new();
    for id in ["left", "right"] {
        let out = run(&cd, cd.namespace(), id, &[GROUP], &["sleep", "1000"]);
        assert!(out.status.success(), "ctr run {id}: {}", stderr(&out));
        inits.push(cd.wait_status(id, "RUNNING"));
    }
    let shim = cd.the_shim();
    // containerd down, so that this test, not containerd, runs the first `delete`.
    cd.stop_daemon();
    // SAFETY: a plain system call on the shim we just identified.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    poll_until(Duration::from_secs(5), "the shim gone", || {
        integration::proc::stat(shim)
            .is_none_or(|s| s.0 == 'Z')
            .then_some(())
    });
    let bundle = cd.dir().join(format!(
        "state/io.containerd.runtime.v2.task/{}/left",
        cd.namespace()
    ));
    let ttrpc = format!("{}.ttrpc", cd.address.display());
    let out = std::process::Command::new(&cd.shim)
        .args(["-namespace", cd.namespace(), "-id", "left", "-address"])
        .arg(&cd.address)
        .arg("delete")
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", &ttrpc)
        .output()
        .expect("run the shim's delete");
    assert!(out.status.success(), "delete: {}", stderr(&out));
    poll_until(Duration::from_secs(5), "left's init killed", || {
        (!integration::proc::alive(inits[0])).then_some(())
    });
    assert!(
        integration::proc::alive(inits[1]),
        "`delete` of left killed right's process"
    );
    // containerd, back, cleans up right after its dead shim.
    cd.start_daemon();
    poll_until(Duration::from_secs(15), "right's init killed", || {
        (!integration::proc::alive(inits[1])).then_some(())
    });
    for id in ["left", "right"] {
        let _ = cd.ctr_output(&["task", "rm", "--force", id]);
        let _ = cd.ctr_output(&["container", "rm", id]);
    }
}

/// A host-mode container and an OCI-mode one in one shim (a group), the host mode without
/// cgroups, so that its members are found through the process tree: the host container's
/// end does not take the real container's processes for its strays, nor the other way
/// round.
#[test]
fn a_host_container_and_a_real_one_in_one_shim_never_end_each_other() {
    let Some(cd) = Containerd::start_with_env(&[("SAMPLE_SHIM_CGROUPS", "off")]) else {
        return;
    };
    let busybox = cd.import_busybox();
    let options = cd.dir().join("runc.toml");
    std::fs::write(&options, "BinaryName = \"runc\"\n").expect("write the options");
    let options = options.display().to_string();
    let out = cd.ctr_output(&[
        "run",
        "-d",
        "--runtime",
        integration::RUNTIME,
        "--runtime-config-path",
        &options,
        "--annotation",
        GROUP,
        busybox,
        "real",
        "sh",
        "-c",
        "sleep 1000 & sleep 1000 & wait",
    ]);
    assert!(out.status.success(), "ctr run real: {}", stderr(&out));
    let real_init = cd.wait_status("real", "RUNNING");
    let real: Vec<i32> = poll_until(Duration::from_secs(5), "real's two sleeps", || {
        let pids: Vec<i32> = cd
            .ctr_ok(&["task", "ps", "real"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        (pids.len() == 3).then_some(pids)
    });
    // The host container leaves a daemon of its own behind (a stray), then exits.
    let out = run(
        &cd,
        cd.namespace(),
        "host",
        &[GROUP],
        &["sh", "-c", "setsid sleep 1000 & sleep 1"],
    );
    assert!(out.status.success(), "ctr run host: {}", stderr(&out));
    assert_eq!(cd.the_shim(), cd.shim_pids()[0], "one shim for both");
    cd.wait_status("host", "STOPPED");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        real.iter()
            .chain([&real_init])
            .all(|&p| integration::proc::alive(p)),
        "the host container's end reached the real container's processes"
    );
    cd.ctr_ok(&["task", "rm", "host"]);
    cd.ctr_ok(&["container", "rm", "host"]);
    cd.kill_and_remove("real", "SIGKILL");
    cd.wait_shims_gone();
}
