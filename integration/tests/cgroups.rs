//! cgroups: a task's processes live in the cgroup its spec names (`ctr` names
//! `/<namespace>/<id>`), with the spec's limits; the OOM killer's kills are reported before
//! the exit they cause; `ctr task metrics` reads the cgroup; `Pause` freezes it; `Update`
//! changes its limits; and nothing of a task outlives it, not even a daemon that left its
//! process group and session, not even when the shim is killed.
//!
//! Run here on cgroup v1 (with an empty cgroup2 beside it); GitHub's runners are v2 only.

use std::{fs, thread, time::Duration};

use integration::{cgroup_dirs, cgroupfs, poll_until, proc, stderr, wait_line, Containerd};

/// The cgroup `ctr` names for task `id`: `/<namespace>/<id>`.
fn cgroup_of(cd: &Containerd, id: &str) -> String {
    format!("/{}/{id}", cd.namespace())
}

/// The live process whose command line is exactly `args`.
fn running(args: &[&str]) -> Option<i32> {
    proc::all_pids()
        .into_iter()
        .find(|&p| proc::alive(p) && proc::cmdline(p) == args)
}

/// `ctr run -d` of `args` as task `id` with extra `ctr run` flags; waits until it runs.
fn run_with(cd: &Containerd, flags: &[&str], id: &str, args: &[&str]) -> i32 {
    let mut full = cd.run_args("-d", id, args);
    for (i, flag) in flags.iter().enumerate() {
        full.insert(2 + i, flag);
    }
    cd.ctr_ok(&full);
    cd.wait_status(id, "RUNNING")
}

/// Asserts no directory of cgroup `path` is left in any hierarchy.
fn assert_gone(path: &str) {
    let left = cgroup_dirs(path);
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

/// A shell that tries to hold 200 MB in one variable.
// The hog makes itself the OOM killer's first choice (raising a score needs no privilege):
// with every process of the task at the same score, a second kill while the first victim's
// memory is still being freed could otherwise take the task's init (seen once in 1.7's run).
const HOG: &str =
    "echo 1000 > /proc/self/oom_score_adj; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived";

#[test]
fn a_task_s_processes_live_in_the_cgroup_its_spec_names_until_delete() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let path = cgroup_of(&cd, "cg");
    let pid = cd.run_detached("cg", &["sh", "-c", "sleep 1002 & exec sleep 1000"]);
    let child = poll_until(Duration::from_secs(5), "sleep 1002", || {
        running(&["sleep", "1002"])
    });
    for p in [pid, child] {
        assert!(
            cgroupfs::of_process(p).contains(&path),
            "{p} is in {:?}, not {path}",
            cgroupfs::of_process(p)
        );
    }
    // `ctr task ps` is the cgroup's list.
    let ps = cd.ctr_ok(&["task", "ps", "cg"]);
    for p in [pid, child] {
        assert!(ps.contains(&p.to_string()), "{p} not in ctr task ps:\n{ps}");
    }
    assert!(!cgroup_dirs(&path).is_empty());
    cd.kill_and_remove("cg", "KILL");
    assert!(!proc::alive(child), "the init's child went with it");
    assert_gone(&path);
    cd.wait_shims_gone();
}

#[test]
fn a_daemon_that_left_its_session_dies_with_its_task_when_the_shim_is_killed() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    cd.run_detached(
        "crashy",
        &["sh", "-c", "setsid sleep 1003 & exec sleep 1000"],
    );
    let daemon = poll_until(Duration::from_secs(5), "sleep 1003", || {
        running(&["sleep", "1003"])
    });
    let shim = cd.the_shim();
    // SAFETY: a plain system call on the shim we just identified.
    unsafe { libc::kill(shim, libc::SIGKILL) };
    // containerd runs the shim's `delete`, which kills what is left in the task's cgroup.
    poll_until(Duration::from_secs(15), "the daemon killed", || {
        (!proc::alive(daemon)).then_some(())
    });
    let _ = cd.ctr_output(&["task", "rm", "crashy"]);
    cd.ctr_ok(&["container", "rm", "crashy"]);
    assert_gone(&cgroup_of(&cd, "crashy"));
}

/// The case: `ctr run --memory-limit` of a task that wants more. The OOM killer
/// ends it (137), and `/tasks/oom` comes before `/tasks/exit`, as from containerd's runc
/// shim.
#[test]
fn the_oom_killer_s_kill_is_reported_before_the_exit_it_causes() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    let mut args = cd.run_args("--rm", "hog", &["sh", "-c", HOG]);
    args.insert(2, "--memory-limit");
    args.insert(3, "33554432");
    let out = cd.ctr_output(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("survived"), "the limit held: {stdout}");
    assert_eq!(out.status.code(), Some(137), "ctr run: {}", stderr(&out));
    let mut order = Vec::new();
    while let Some(line) = wait_line(&lines, Duration::from_secs(10), |l| {
        l.contains("\"container_id\":\"hog\"")
    }) {
        let topic = ["/tasks/oom", "/tasks/exit", "/tasks/delete"]
            .into_iter()
            .find(|t| line.contains(t));
        if let Some(topic) = topic {
            // The kernel may kill twice in one go (two processes of the hog's pipeline):
            // each kill is an event, and all of them come before the exit.
            if order.last() == Some(&topic) && topic == "/tasks/oom" {
                continue;
            }
            order.push(topic);
            if topic == "/tasks/exit" {
                assert!(line.contains("\"exit_status\":137"), "{line}");
            }
            if topic == "/tasks/delete" {
                break;
            }
        }
    }
    assert_eq!(order, ["/tasks/oom", "/tasks/exit", "/tasks/delete"]);
    assert_gone(&cgroup_of(&cd, "hog"));
    cd.wait_shims_gone();
}

/// `Update` through `shim-demo update` (Debian's `ctr` has no `task update`): the new limits
/// are the cgroup's, and the memory limit holds for an exec that asks for more.
#[test]
fn updated_limits_are_the_cgroup_s_and_hold() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let path = cgroup_of(&cd, "upd");
    run_with(
        &cd,
        &["--memory-limit", "268435456"],
        "upd",
        &["sleep", "1000"],
    );
    assert_eq!(cgroupfs::memory_limit(&path), 268_435_456);
    let update = |flags: &[&str]| {
        cd.shim_demo()
            .args(["update", "--id", "upd"])
            .args(flags)
            .output()
            .expect("run shim-demo update")
    };
    let out = update(&[
        "--memory-limit",
        "33554432",
        "--pids-limit",
        "50",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "100000",
    ]);
    assert!(out.status.success(), "shim-demo update: {}", stderr(&out));
    assert_eq!(cgroupfs::memory_limit(&path), 33_554_432);
    assert_eq!(cgroupfs::pids_limit(&path), 50);
    assert_eq!(cgroupfs::cpu_quota(&path), 20_000);
    // An exec that wants more than the new limit is what the OOM killer takes.
    let (_events, lines) = cd.subscribe_events();
    let out = cd.ctr_output(&["task", "exec", "--exec-id", "hog", "upd", "sh", "-c", HOG]);
    assert_eq!(out.status.code(), Some(137), "exec: {}", stderr(&out));
    wait_line(&lines, Duration::from_secs(10), |l| {
        l.contains("/tasks/oom") && l.contains("\"container_id\":\"upd\"")
    })
    .expect("/tasks/oom for the exec's OOM kill");
    assert_eq!(
        cd.task_status("upd").map(|(_, s)| s).as_deref(),
        Some("RUNNING")
    );
    // Nonsense limits are the kernel's to refuse (a period under 1 ms), and the caller
    // hears why.
    let out = update(&["--cpu-period", "100"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cgroup"), "{}", stderr(&out));
    cd.kill_and_remove("upd", "KILL");
    assert_gone(&path);
}

/// `ctr task metrics` decodes what `Stats` reads from the cgroup: its figures are the
/// cgroup's files.
#[test]
fn ctr_task_metrics_are_the_cgroup_s_figures() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let path = cgroup_of(&cd, "met");
    run_with(
        &cd,
        &["--memory-limit", "67108864"],
        "met",
        &["sh", "-c", "sleep 1000 & sleep 1001 & wait"],
    );
    poll_until(Duration::from_secs(5), "three processes", || {
        (cgroupfs::pids_current(&path) == 3).then_some(())
    });
    let json = cd.ctr_ok(&["task", "metrics", "--format", "json", "met"]);
    let metrics: serde_json::Value = serde_json::from_str(&json).expect("json");
    let figure = |pointer: &str| {
        metrics
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} in {json}"))
    };
    // ctr prints the message of the cgroup's version as containerd's Go types name it.
    let (limit, usage, cpu) = if cgroupfs::v2() {
        ("/memory/usage_limit", "/memory/usage", "/cpu/usage_usec")
    } else {
        (
            "/memory/usage/limit",
            "/memory/usage/usage",
            "/cpu/usage/total",
        )
    };
    assert_eq!(figure("/pids/current"), 3);
    assert_eq!(figure(limit), 67_108_864);
    assert_eq!(figure(limit), cgroupfs::memory_limit(&path));
    let usage = figure(usage);
    let now = cgroupfs::memory_usage(&path);
    assert!(usage > 0 && usage <= now * 2, "usage {usage}, file {now}");
    let cpu = figure(cpu) * if cgroupfs::v2() { 1000 } else { 1 };
    let now = cgroupfs::cpu_usage_ns(&path);
    assert!(cpu > 0 && cpu <= now, "cpu {cpu} ns, file {now} ns");
    cd.kill_and_remove("met", "KILL");
    assert_gone(&path);
}

/// `Pause` freezes the cgroup: a task that forks in a loop stops, forks included, and goes
/// on after `Resume`; a paused task killed with SIGKILL ends.
#[test]
fn pause_freezes_a_task_that_forks_in_a_loop() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("counter");
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}; sleep 0.01 & wait; done",
        counter.display()
    );
    cd.run_detached("forky", &["sh", "-c", &script]);
    let count = || {
        fs::read_to_string(&counter)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    poll_until(Duration::from_secs(5), "the loop runs", || {
        count().filter(|&c| c > 3)
    });
    cd.ctr_ok(&["task", "pause", "forky"]);
    assert_eq!(
        cd.task_status("forky").map(|(_, s)| s).as_deref(),
        Some("PAUSED")
    );
    let path = cgroup_of(&cd, "forky");
    assert!(cgroupfs::frozen(&path), "the cgroup is frozen");
    let frozen = count();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), frozen, "the loop went on while paused");
    cd.ctr_ok(&["task", "resume", "forky"]);
    assert_eq!(
        cd.task_status("forky").map(|(_, s)| s).as_deref(),
        Some("RUNNING")
    );
    poll_until(Duration::from_secs(5), "the loop goes on", || {
        (count() > frozen).then_some(())
    });
    // Paused again, then killed: the kill ends it.
    cd.ctr_ok(&["task", "pause", "forky"]);
    cd.kill_and_remove("forky", "KILL");
    assert_gone(&path);
    cd.wait_shims_gone();
}

/// `ctr run --cgroup ""` asks for no cgroup: the task runs as before, and `Update` says
/// why it cannot.
#[test]
fn a_task_without_a_cgroup_runs_and_update_says_why_not() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let pid = run_with(&cd, &["--cgroup", ""], "nocg", &["sleep", "1000"]);
    assert!(
        !cgroupfs::of_process(pid).contains(&cgroup_of(&cd, "nocg")),
        "{:?}",
        cgroupfs::of_process(pid)
    );
    let out = cd
        .shim_demo()
        .args(["update", "--id", "nocg"])
        .args(["--memory-limit", "33554432"])
        .output()
        .expect("run shim-demo update");
    assert!(!out.status.success());
    // FailedPrecondition, as tonic describes it.
    let text = stderr(&out);
    assert!(
        text.contains("not in a state required") && text.contains("no cgroup"),
        "{text}"
    );
    cd.kill_and_remove("nocg", "KILL");
}
