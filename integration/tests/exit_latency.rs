//! A detached task's exit is reported as fast as containerd's runc-v2 shim reports it.
//!
//! `ctr run -d` leaves at once: nobody reads the task's FIFOs. The shim's exit policy waits
//! for a connected reader to take the output the process left (`ctr run` stops reading at
//! its exit), and must not wait at all when there is none: the issue saw 544 ms against
//! runc-v2's 26 ms for a task with output pending. Here both shims run the same task in the
//! same daemon, five times each, quiet and loud (its FIFO and pipe full when it is killed),
//! and `ctr task kill -s SIGKILL` is timed to the `/tasks/exit` event: our median must be at
//! most twice runc-v2's + 10 ms (the bound), and the exit code 137.

use std::time::{Duration, Instant};

use integration::{
    timing::{arrival, median, stamped},
    Containerd,
};

/// A task that prints nothing, and one whose output piles up with nobody to read it.
const TASKS: [(&str, &str); 2] = [
    ("quiet", "exec sleep 1000"),
    (
        "loud",
        "while :; do echo 0123456789012345678901234567890123456789; done",
    ),
];

const RUNS: usize = 5;

/// `ctr run -d` of `script` as `id` (with `run` the `ctr run -d ... id` arguments before
/// the command), killed with SIGKILL once running: kill to `/tasks/exit`.
fn kill_to_exit(
    cd: &Containerd,
    events: &std::sync::mpsc::Receiver<(Instant, String)>,
    run: &[&str],
    id: &str,
    script: &str,
) -> Duration {
    let mut args = run.to_vec();
    args.extend_from_slice(&["sh", "-c", script]);
    cd.ctr_ok(&args);
    cd.wait_status(id, "RUNNING");
    // Long enough for a loud task to fill its FIFO and pipe.
    std::thread::sleep(Duration::from_millis(300));
    let needle = format!("\"container_id\":\"{id}\"");
    let started = Instant::now();
    cd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    let at = arrival(events, Duration::from_secs(15), |l| {
        l.contains("/tasks/exit") && l.contains(&needle)
    })
    .unwrap_or_else(|| panic!("no /tasks/exit of {id} within 15 s"));
    let (_, status) = cd.task_status(id).expect("the task");
    assert_eq!(status, "STOPPED", "{id}");
    let deleted = cd.ctr_ok(&["task", "rm", id]);
    assert!(
        deleted.contains("137") || deleted.is_empty(),
        "{id}: {deleted}"
    );
    cd.ctr_ok(&["container", "rm", id]);
    at.duration_since(started)
}

#[test]
fn a_detached_task_reports_its_exit_as_fast_as_under_runc_v2() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let busybox = cd.import_busybox();
    let (_subscription, lines) = cd.subscribe_events();
    let events = stamped(lines);
    for (name, script) in TASKS {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // Alternating, so that a noisy moment falls on both.
        for run in 0..RUNS {
            let id = format!("ours-{name}-{run}");
            let args = cd.run_args("-d", &id, &[]);
            ours.push(kill_to_exit(&cd, &events, &args, &id, script));
            let id = format!("runc-{name}-{run}");
            let args = ["run", "-d", busybox, id.as_str()];
            theirs.push(kill_to_exit(&cd, &events, &args, &id, script));
        }
        let (ours, theirs) = (median(ours), median(theirs));
        eprintln!(
            "{name}: SIGKILL to /tasks/exit, median of {RUNS}: ours {ours:?}, runc-v2 {theirs:?}"
        );
        assert!(
            ours <= 2 * theirs + Duration::from_millis(10),
            "{name}: our detached exit took {ours:?} (median), runc-v2's {theirs:?}"
        );
    }
    cd.wait_shims_gone();
}
