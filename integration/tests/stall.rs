//! One container's slow `Create` must not stall its neighbours in the same shim.
//!
//! Two containers share a shim (`com.example.sample.group`). The second one's `binary://`
//! logger never says it is ready: it keeps fd 5 open and never writes to it, so the shim
//! waits for it, up to `READY_LIMIT` (10 s, `shim/src/logs.rs`), before it refuses the
//! `Create`. While it waits, the first container is none of that business: `ctr task ps`
//! (`Pids`), `ctr task ls` (containerd's `State` of every task) and `ctr task kill` with its
//! `/tasks/exit` event must each be served as fast as when nothing waits (the issue: 100 ms).
//!
//! How the latency is measured: through `ctr`, whose own start and round trip take tens of
//! milliseconds. Each call is first timed with nothing in the way (the slowest of three
//! runs is the baseline), and the same call during the hang must take at most that
//! baseline + 100 ms of wall time. The kill's budget is the same, from the moment its
//! `ctr task kill` starts to the moment the `/tasks/exit` line reaches us from `ctr
//! events`, subscribed beforehand and timestamped by a thread as lines arrive. Nothing
//! sleeps inside a measured window.

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    process::{Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use integration::{poll_until, proc, stderr, wait_exit, ChildGuard, Containerd};

const GROUP: &str = "com.example.sample.group=g";

/// What a neighbour's call may take beyond its baseline (the figure).
const SLACK: Duration = Duration::from_millis(100);

/// A logger that never gets ready: it keeps fd 5 (the readiness pipe) open and never
/// writes to it.
const HUNG_LOGGER: &str = "#!/bin/sh\nexec sleep 1000\n";

/// `f`'s result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// The slowest of three runs of `ctr args...`, each of which must succeed.
fn baseline(cd: &Containerd, args: &[&str]) -> Duration {
    (0..3)
        .map(|_| timed(|| cd.ctr_ok(args)).1)
        .max()
        .unwrap_or_default()
}

/// `lines`, each with the moment it arrived: a thread receives them as they come, so that
/// a test busy waiting for a `ctr` command does not delay the timestamp.
fn stamped(lines: mpsc::Receiver<String>) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in lines {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// When the first event line satisfying `pred` arrived, waiting at most `limit`.
fn arrival(
    lines: &mpsc::Receiver<(Instant, String)>,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match lines.recv_timeout(left) {
            Ok((at, line)) if pred(&line) => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// A `ctr` command's output as text, for failure messages.
fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    )
}

#[test]
fn a_logger_that_never_gets_ready_stalls_no_neighbour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logger = dir.path().join("hung-logger");
    fs::write(&logger, HUNG_LOGGER).expect("write the logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod");
    let Some(cd) = Containerd::start() else {
        return;
    };

    // `first`, running in the group's shim.
    let mut args = cd.run_args("-d", "first", &["sleep", "1000"]);
    args.splice(2..2, ["--annotation", GROUP]);
    cd.ctr_ok(&args);
    let first_pid = cd.wait_status("first", "RUNNING");
    let shim = cd.the_shim();
    let (_events, lines) = cd.subscribe_events();
    let events = stamped(lines);

    // What the three calls take with nothing in the way.
    let ps_baseline = baseline(&cd, &["task", "ps", "first"]);
    let ls_baseline = baseline(&cd, &["task", "ls"]);

    // `second`, in the same group, with the hung logger: its `ctr run` waits for the
    // shim's `Create`, which waits for the logger.
    let uri = format!("binary://{}", logger.display());
    let mut args = cd.run_args("-d", "second", &["sleep", "1000"]);
    args.splice(2..2, ["--annotation", GROUP, "--log-uri", &uri]);
    let mut second = ChildGuard(
        cd.ctr_with(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run second"),
    );
    // The logger, once it is the `sleep` that hangs: the shim's child, with the
    // environment a logger gets.
    let hung = poll_until(Duration::from_secs(10), "the hung logger", || {
        proc::descendants(shim).into_iter().find(|&pid| {
            proc::comm(pid) == "sleep"
                && proc::environ(pid).contains(&"CONTAINER_ID=second".to_string())
        })
    });
    assert!(
        matches!(second.0.try_wait(), Ok(None)),
        "ctr run second ended before its logger hung"
    );

    // During the hang: Pids, State of every task, Kill and its exit event.
    let (ps, ps_took) = timed(|| cd.ctr_output(&["task", "ps", "first"]));
    let (ls, ls_took) = timed(|| cd.ctr_output(&["task", "ls"]));
    let kill_started = Instant::now();
    let kill = cd.ctr_output(&["task", "kill", "-s", "SIGKILL", "first"]);
    let exit_at = arrival(&events, Duration::from_secs(15), |l| {
        l.contains("/tasks/exit") && l.contains("\"container_id\":\"first\"")
    });
    let exit_took = exit_at.map(|at| at.duration_since(kill_started));
    let hung_throughout = proc::alive(hung) && matches!(second.0.try_wait(), Ok(None));
    eprintln!(
        "during the hang: ctr task ps {ps_took:?} (baseline {ps_baseline:?}), \
         ctr task ls {ls_took:?} (baseline {ls_baseline:?}), \
         kill to /tasks/exit {exit_took:?} (budget from the ps baseline); \
         logger still hung after them: {hung_throughout}"
    );
    assert!(
        ps_took <= ps_baseline + SLACK,
        "ctr task ps first took {ps_took:?} while second's logger hung \
         (baseline {ps_baseline:?})"
    );
    assert!(ps.status.success(), "ctr task ps: {}", text(&ps));
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains(&first_pid.to_string()),
        "ctr task ps first: {}",
        text(&ps)
    );
    assert!(
        ls_took <= ls_baseline + SLACK,
        "ctr task ls took {ls_took:?} while second's logger hung (baseline {ls_baseline:?})"
    );
    // (containerd lists `second` too, during its `Create`: its row is not checked.)
    let row = ["first".to_string(), first_pid.to_string(), "RUNNING".into()];
    assert!(
        String::from_utf8_lossy(&ls.stdout)
            .lines()
            .any(|l| l.split_whitespace().eq(row.iter().map(String::as_str))),
        "ctr task ls: {}",
        text(&ls)
    );
    assert!(kill.status.success(), "ctr task kill: {}", text(&kill));
    let exit_took = exit_took.expect("no /tasks/exit of first within 15 s");
    assert!(
        exit_took <= ps_baseline + SLACK,
        "first's /tasks/exit came {exit_took:?} after ctr task kill started \
         (baseline {ps_baseline:?})"
    );
    assert!(
        hung_throughout,
        "the logger stopped hanging before the measurements ended: they prove nothing"
    );

    // The logger gone, second's `Create` fails at once, naming the logger.
    // SAFETY: a plain system call on the shim's unreaped child we just found.
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let status = wait_exit(&mut second.0, Duration::from_secs(5))
        .expect("ctr run second still waits 5 s after its logger was killed");
    let mut message = String::new();
    if let Some(mut err) = second.0.stderr.take() {
        let _ = err.read_to_string(&mut message);
    }
    assert!(!status.success(), "ctr run second succeeded: {message}");
    assert!(
        message.contains(&format!("logger {}", logger.display())),
        "{message}"
    );
    assert_eq!(cd.task_status("second"), None, "no task is left");
    cd.ctr_ok(&["container", "rm", "second"]);

    cd.wait_status("first", "STOPPED");
    cd.ctr_output(&["task", "rm", "first"]);
    cd.ctr_ok(&["container", "rm", "first"]);
    cd.wait_shims_gone();
}
