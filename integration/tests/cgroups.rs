//! cgroups (issue 12, in progress): a task's processes live in the cgroup its spec names
//! (`ctr` names `/<namespace>/<id>`), and nothing of it outlives the task, not even a
//! daemon that left its process group and session, not even when the shim is killed.

use std::{fs, path::Path, time::Duration};

use integration::{poll_until, proc, Containerd};

/// The cgroup paths `pid` is in (`/proc/<pid>/cgroup`, any hierarchy).
fn cgroups_of(pid: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit(':').next().map(str::to_string))
        .collect()
}

/// Every directory of cgroup `path`, in whichever hierarchies exist here.
fn cgroup_dirs(path: &str) -> Vec<String> {
    ["memory", "pids", "cpu", "freezer", ""]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}{path}").replace("//", "/"))
        .filter(|d| Path::new(d).exists())
        .collect()
}

/// The live process whose command line is exactly `args`.
fn running(args: &[&str]) -> Option<i32> {
    proc::all_pids()
        .into_iter()
        .find(|&p| proc::alive(p) && proc::cmdline(p) == args)
}

#[test]
fn a_task_s_processes_live_in_the_cgroup_its_spec_names_until_delete() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let pid = cd.run_detached("cg", &["sh", "-c", "sleep 1002 & exec sleep 1000"]);
    let child = poll_until(Duration::from_secs(5), "sleep 1002", || {
        running(&["sleep", "1002"])
    });
    for p in [pid, child] {
        assert!(
            cgroups_of(p).iter().any(|c| c == "/default/cg"),
            "{p} is in {:?}",
            cgroups_of(p)
        );
    }
    assert!(!cgroup_dirs("/default/cg").is_empty());
    cd.kill_and_remove("cg", "KILL");
    let left = cgroup_dirs("/default/cg");
    assert!(left.is_empty(), "cgroups left: {left:?}");
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
    let _ = cd.ctr_output(&["container", "rm", "crashy"]);
    let left = cgroup_dirs("/default/crashy");
    assert!(left.is_empty(), "cgroups left: {left:?}");
}
