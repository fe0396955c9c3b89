//! The Go sample's guided tour, driven by Debian's `ctr` against a private containerd.
//!
//! Each test reads like a step of the Go sample's README: a command, and what a reader should
//! observe about the process tree, the statuses and the exit codes.

use std::{fs, os::unix::process::CommandExt, path::PathBuf, thread, time::Duration};

use integration::{
    parse_rfc3339_seconds, poll_until, proc, spawn_lines, stderr, wait_exit, wait_line, Containerd,
    RUNTIME,
};

const TASK: &str = "shim-test";

fn create_container(cd: &Containerd) {
    let image = cd.import_image();
    cd.ctr_ok(&["container", "create", "--runtime", RUNTIME, image, TASK]);
}

/// True when process `pid` has a handler for `signal`: its bit in `SigCgt`, the caught
/// signals mask of `/proc/<pid>/status` (bit `n - 1` for signal `n`).
fn catches_signal(pid: i32, signal: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|caught| caught & (1 << (signal - 1)) != 0)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[test]
fn the_guided_tour_step_by_step() {
    let Some(cd) = Containerd::start() else {
        return;
    };

    // Creating the container is containerd's business alone: no shim yet.
    create_container(&cd);
    let containers = cd.ctr_ok(&["container", "ls"]);
    let row = containers
        .lines()
        .find(|l| l.starts_with(TASK))
        .unwrap_or_else(|| panic!("{TASK} not listed:\n{containers}"));
    assert!(
        row.contains(integration::image::IMAGE) && row.contains(RUNTIME),
        "{row}"
    );
    assert!(cd.shim_pids().is_empty(), "no shim before a task starts");

    // `ctr task start --detach` prints nothing of its own on success. (ctr copies the task's
    // output until it exits, so the loop's first date line may slip through.)
    let out = cd.ctr_output(&["task", "start", "--detach", TASK]);
    assert!(out.status.success(), "start failed: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.stderr.is_empty() && stdout.lines().all(|l| parse_rfc3339_seconds(l).is_some()),
        "start printed {out:?}"
    );

    // RUNNING with a pid; the pid is the shim's child, leading its own process group.
    let pid = cd.wait_status(TASK, "RUNNING");
    let shim = cd.the_shim();
    assert_eq!(proc::ppid(pid), Some(shim), "the task's parent is the shim");
    assert_eq!(
        proc::pgid(pid),
        Some(pid),
        "the task leads its own process group"
    );
    assert_eq!(
        proc::sid(shim),
        Some(shim),
        "the shim has a session of its own"
    );
    assert_eq!(
        proc::cmdline(pid),
        [
            "sh",
            "-c",
            "while date --rfc-3339=seconds; do sleep 5; done"
        ]
    );

    // The socket is a file, private to root.
    let socket = PathBuf::from(
        fs::read_to_string(cd.dir().join(format!(
            "state/io.containerd.runtime.v2.task/{}/{TASK}/address",
            cd.namespace()
        )))
        .expect("address file in the bundle")
        .trim_start_matches("unix://"),
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(&socket).expect("socket").permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "socket {} mode {mode:o}",
        socket.display()
    );

    // A running task cannot be removed.
    let out = cd.ctr_output(&["task", "rm", TASK]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("task must be stopped before deletion"),
        "{}",
        stderr(&out)
    );

    // SIGTERM by default; the task stops, the shim stays, without children.
    cd.ctr_ok(&["task", "kill", TASK]);
    assert_eq!(cd.wait_status(TASK, "STOPPED"), pid);
    assert!(
        proc::alive(shim),
        "the shim outlives its task until the task is deleted"
    );
    assert_eq!(
        proc::children(shim),
        Vec::<i32>::new(),
        "a stopped task leaves the shim no children"
    );

    // Removing the task shows 128 + 15.
    let out = cd.ctr_output(&["task", "rm", TASK]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("exit code 143"), "{}", stderr(&out));

    cd.ctr_ok(&["container", "rm", TASK]);
    for _ in 0..250 {
        if !proc::alive(shim) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !proc::alive(shim),
        "the shim exits once its task is deleted"
    );
    assert!(
        !socket.exists(),
        "the shim removed its socket {}",
        socket.display()
    );
    assert!(!proc::alive(pid));

    // The shim's own log lines reached containerd through the bundle's `log` FIFO.
    assert!(
        cd.log().contains("waiting for Start"),
        "shim log lines missing from containerd's log"
    );
}

#[test]
fn attached_start_streams_dates_and_ctrl_c_exits_130() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    create_container(&cd);

    // Ctrl-C reaches ctr, which forwards it to the task. ctr installs that forwarding
    // (`signal.Notify`) only after `Start` returns, which can be after the first line; a
    // SIGINT before then would kill ctr itself. So ctr starts with SIGINT ignored: a Go
    // program leaves an inherited SIG_IGN alone until `signal.Notify` asks for the signal,
    // and only then installs its handler, which `/proc/<pid>/status` shows (see below).
    let mut start = cd.ctr_with(&["task", "start", TASK]);
    // SAFETY: between fork and exec the child only calls signal(2), which is
    // async-signal-safe, and reads errno.
    unsafe {
        start.pre_exec(|| {
            if libc::signal(libc::SIGINT, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut ctr, lines) = spawn_lines(start);
    let line = wait_line(&lines, Duration::from_secs(10), |l| {
        parse_rfc3339_seconds(l).is_some()
    })
    .expect("an RFC 3339 date line on the attached stdout");
    let printed = parse_rfc3339_seconds(&line).expect("parsed");
    assert!(
        (now_secs() - printed).abs() <= 5,
        "{line} is not the current time"
    );

    // Ctrl-C: ctr forwards SIGINT to the task, which dies of it: 128 + 2. Wait until ctr
    // catches SIGINT, that is until its forwarding is in place.
    poll_until(
        Duration::from_secs(10),
        "ctr to catch SIGINT (its signal forwarding after Start)",
        || catches_signal(ctr.id() as i32, libc::SIGINT).then_some(()),
    );
    // SAFETY: a plain system call on our own child.
    unsafe { libc::kill(ctr.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut ctr, Duration::from_secs(15)).expect("ctr exits after SIGINT");
    assert_eq!(
        status.code(),
        Some(130),
        "ctr must exit with the task's code, not die: {status:?}"
    );

    // The attached ctr deleted the task on its way out.
    assert_eq!(cd.task_status(TASK), None);
    cd.ctr_ok(&["container", "rm", TASK]);
    cd.wait_shims_gone();
}

#[test]
fn attach_sees_new_output_and_sigkill_exits_137() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    create_container(&cd);
    cd.ctr_ok(&["task", "start", "--detach", TASK]);
    cd.wait_status(TASK, "RUNNING");

    // Nobody reads the output for a while (this sleep is the point of the test, not a
    // wait for something): the task must still be alive afterwards.
    thread::sleep(Duration::from_secs(1));
    let attached_at = now_secs();
    let (mut attach, lines) = cd.spawn_ctr(&["task", "attach", TASK]);
    let line = wait_line(&lines, Duration::from_secs(12), |l| {
        parse_rfc3339_seconds(l).is_some_and(|t| t >= attached_at)
    })
    .expect("a date line printed after attaching");
    assert!(parse_rfc3339_seconds(&line).is_some());

    cd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", TASK]);
    let status =
        wait_exit(&mut attach, Duration::from_secs(15)).expect("attach ends with the task");
    assert_eq!(
        status.code(),
        Some(137),
        "exit code seen by the attached ctr: {status:?}"
    );
    // Like an attached `ctr task start`, `ctr task attach` deletes the task it saw exit.
    assert_eq!(cd.task_status(TASK), None);
    cd.ctr_ok(&["container", "rm", TASK]);
    cd.wait_shims_gone();
}

#[test]
fn events_arrive_in_order_and_ps_lists_shell_and_sleep() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();

    create_container(&cd);
    cd.ctr_ok(&["task", "start", "--detach", TASK]);
    let pid = cd.wait_status(TASK, "RUNNING");

    // `ctr task ps`: the shell and, most of the time, its `sleep 5`.
    let mut listed = Vec::new();
    for _ in 0..60 {
        listed = cd
            .ctr_ok(&["task", "ps", TASK])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse::<i32>().ok())
            .collect();
        if listed.iter().any(|&p| proc::comm(p) == "sleep") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        listed.contains(&pid),
        "ps lists the shell {pid}: {listed:?}"
    );
    assert!(
        listed
            .iter()
            .any(|&p| p != pid && proc::comm(p) == "sleep" && proc::ppid(p) == Some(pid)),
        "ps lists the shell's sleep: {listed:?}"
    );

    cd.ctr_ok(&["task", "kill", TASK]);
    cd.wait_status(TASK, "STOPPED");
    cd.ctr_output(&["task", "rm", TASK]);

    let mut seen = Vec::new();
    while let Some(line) = wait_line(&lines, Duration::from_secs(10), |l| l.contains(" /tasks/")) {
        if !line.contains(&format!("\"container_id\":\"{TASK}\"")) {
            continue;
        }
        let topic = line
            .split_whitespace()
            .find(|w| w.starts_with("/tasks/"))
            .expect("topic")
            .to_string();
        if topic == "/tasks/exit" {
            assert!(line.contains("\"exit_status\":143"), "{line}");
            assert!(line.contains(&format!("\"pid\":{pid}")), "{line}");
        }
        let done = topic == "/tasks/delete";
        seen.push(topic);
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    cd.ctr_ok(&["container", "rm", TASK]);
    cd.wait_shims_gone();
}
