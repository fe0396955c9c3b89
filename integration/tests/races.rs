//! Races: processes that exit before `Start` returns, `Kill` and `Delete` racing the exit,
//! concurrent execs and concurrent shims. Exit codes always right, exactly one exit event
//! per process, `/tasks/start` before `/tasks/exit`.

use std::{collections::HashMap, thread, time::Duration};

use integration::{wait_line, Containerd};

/// Collects `/tasks/*` topics per container until `quiet` passes without a new line.
fn collect(
    lines: &std::sync::mpsc::Receiver<String>,
    quiet: Duration,
) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(line) = wait_line(lines, quiet, |l| l.contains(" /tasks/")) {
        let topic = line
            .split_whitespace()
            .find(|w| w.starts_with("/tasks/"))
            .unwrap_or("")
            .to_string();
        if let Some(id) = line
            .split("\"container_id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            seen.entry(id.to_string()).or_default().push(topic);
        }
    }
    seen
}

#[test]
fn short_lived_processes_report_start_before_exit_exactly_once() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    for i in 0..20 {
        let id = format!("true-{i}");
        let out = cd.run_rm(&id, &["true"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let seen = collect(&lines, Duration::from_secs(3));
    for i in 0..20 {
        let topics = &seen[&format!("true-{i}")];
        assert_eq!(
            topics,
            &[
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete"
            ],
            "true-{i}"
        );
    }
    cd.wait_shims_gone();
}

#[test]
fn kill_and_delete_racing_the_exit_lose_nothing() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    for i in 0..10 {
        // Kill racing a process that is exiting on its own.
        let id = format!("kill-{i}");
        let sleep = format!("0.0{i}");
        let args = cd.run_args("-d", &id, &["sleep", &sleep]);
        cd.ctr_ok(&args);
        let out = cd.ctr_output(&["task", "kill", &id]);
        let said = String::from_utf8_lossy(&out.stderr);
        // NotFound once the process is gone ("... already finished"; ctr 1.6 appends
        // "not found", 1.7 and 2.x print the message alone).
        assert!(
            out.status.success() || said.contains("already finished"),
            "kill {id}: {said}"
        );
        cd.wait_status(&id, "STOPPED");
        let out = cd.ctr_output(&["task", "rm", &id]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rm {id}: {said}");
        assert!(
            said.is_empty() || said.contains("exit code 143"),
            "{id}: {said}"
        );
        cd.ctr_ok(&["container", "rm", &id]);

        // Delete racing the exit: refused until the process is gone, then exit code 0.
        let id = format!("rm-{i}");
        let args = cd.run_args("-d", &id, &["sleep", &sleep]);
        cd.ctr_ok(&args);
        let mut deleted = false;
        for _ in 0..500 {
            let out = cd.ctr_output(&["task", "rm", &id]);
            if out.status.success() {
                assert!(out.stderr.is_empty(), "{id}: {out:?}");
                deleted = true;
                break;
            }
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("must be stopped"),
                "{out:?}"
            );
        }
        assert!(deleted, "{id} was never deleted");
        cd.ctr_ok(&["container", "rm", &id]);
    }
    let seen = collect(&lines, Duration::from_secs(3));
    for (id, topics) in &seen {
        let exits = topics.iter().filter(|t| *t == "/tasks/exit").count();
        assert_eq!(exits, 1, "{id}: {topics:?}");
        let start = topics.iter().position(|t| t == "/tasks/start");
        let exit = topics.iter().position(|t| t == "/tasks/exit");
        assert!(start < exit, "{id}: {topics:?}");
    }
    assert_eq!(seen.len(), 20);
    cd.wait_shims_gone();
}

#[test]
fn twenty_concurrent_execs_get_their_own_exit_codes() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    cd.run_detached("host", &["sleep", "1000"]);
    let codes: Vec<(i32, Option<i32>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let cd = &cd;
                scope.spawn(move || {
                    let exec_id = format!("e{i}");
                    let script = format!("sleep 0.2; exit {i}");
                    let out = cd.ctr_output(&[
                        "task",
                        "exec",
                        "--exec-id",
                        &exec_id,
                        "host",
                        "sh",
                        "-c",
                        &script,
                    ]);
                    (i, out.status.code())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, code) in codes {
        assert_eq!(code, Some(i), "exec e{i}");
    }
    cd.kill_and_remove("host", "SIGKILL");
    cd.wait_shims_gone();
}

#[test]
fn many_shims_started_at_once() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let codes: Vec<(i32, Option<i32>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let cd = &cd;
                scope.spawn(move || {
                    let id = format!("many-{i}");
                    let script = format!("exit {}", 10 + i);
                    (10 + i, cd.run_rm(&id, &["sh", "-c", &script]).status.code())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (want, code) in codes {
        assert_eq!(code, Some(want));
    }
    cd.wait_shims_gone();
}
