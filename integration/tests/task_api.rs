//! Beyond the guided tour: the whole Task API through `ctr` (and `CloseIO` through the gRPC API,
//! since `ctr` 1.6 never sends it). Processes run in *spec mode*: the annotation
//! `com.example.sample.process=spec` makes the task run the command `ctr` was given.

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use integration::{wait_line, Containerd, RUNTIME, SPEC_MODE};

/// `ctr run --rm` in spec mode: returns (exit code, stdout, stderr).
fn run(cd: &Containerd, id: &str, args: &[&str]) -> (i32, String, String) {
    let out = cd.run_rm(id, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `/tasks/*` topics seen for container `id` (and their lines), until `last` shows up.
fn topics_until(lines: &mpsc::Receiver<String>, id: &str, last: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while let Some(line) = wait_line(lines, Duration::from_secs(10), |l| l.contains(" /tasks/")) {
        if !line.contains(&format!("\"container_id\":\"{id}\"")) {
            continue;
        }
        let topic = line
            .split_whitespace()
            .find(|w| w.starts_with("/tasks/"))
            .unwrap_or("")
            .to_string();
        let done = topic == last;
        seen.push((topic, line));
        if done {
            break;
        }
    }
    seen
}

fn topics(seen: &[(String, String)]) -> Vec<&str> {
    seen.iter().map(|(t, _)| t.as_str()).collect()
}

/// Waits for `/tasks/exec-started` of exec `exec_id`: from then on the shim has the exec
/// and its process runs. Events of other processes seen on the way are dropped.
fn wait_exec_started(lines: &mpsc::Receiver<String>, exec_id: &str) {
    let id = format!("\"exec_id\":\"{exec_id}\"");
    wait_line(lines, Duration::from_secs(10), |l| {
        l.contains(" /tasks/exec-started ") && l.contains(&id)
    })
    .unwrap_or_else(|| panic!("no /tasks/exec-started for exec {exec_id} within 10 s"));
}

#[test]
fn run_rm_reports_exit_codes_and_events_in_order() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    assert_eq!(run(&cd, "exit-7", &["sh", "-c", "exit 7"]).0, 7);
    assert_eq!(run(&cd, "true", &["true"]).0, 0);
    let seen = topics_until(&lines, "true", "/tasks/delete");
    assert_eq!(
        topics(&seen),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    assert!(
        seen[2].1.contains("\"exit_status\":0") || !seen[2].1.contains("exit_status"),
        "{}",
        seen[2].1
    );
    cd.wait_shims_gone();
}

#[test]
fn stdout_and_stderr_are_separate_exact_and_complete() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (code, stdout, stderr) = run(&cd, "echo", &["sh", "-c", "echo hi; echo oops >&2"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "hi\n");
    assert_eq!(stderr, "oops\n");

    let (code, stdout, _) = run(&cd, "seq", &["seq", "1", "1000000"]);
    assert_eq!(code, 0);
    let numbers: Vec<&str> = stdout.lines().collect();
    assert_eq!(numbers.len(), 1_000_000, "every line arrived");
    assert_eq!((numbers[0], numbers[999_999]), ("1", "1000000"));
    cd.wait_shims_gone();
}

#[test]
fn stdin_reaches_the_task() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let mut child = cd
        .ctr_with(&cd.run_args("--rm", "stdin", &["sh", "-c", "read x; echo got-$x"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ctr");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    let out = child.wait_with_output().expect("ctr run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-hello\n");
    assert!(out.status.success());
    cd.wait_shims_gone();
}

#[test]
fn close_io_gives_eof_after_pending_input() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use shim_demo::{api::Containerd as Api, fifo::FifoSet};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api = Api::connect(&cd.address, cd.namespace())
            .await
            .expect("connect");
        let image = cd.import_image();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": { "com.example.sample.process": "spec" },
            "process": { "args": ["cat"], "cwd": "/", "user": { "uid": 0, "gid": 0 },
                         "env": ["PATH=/usr/bin:/bin"] },
            "root": { "path": "rootfs" },
        })
        .to_string();
        api.create_container_with_spec("cat", image, RUNTIME, &spec)
            .await
            .expect("container");
        let fifos = FifoSet::for_task(&cd.address, cd.namespace(), "cat");
        fifos.create().expect("fifos");
        let mut stdout = shim_demo::fifo::open_reader(&fifos.stdout()).expect("stdout");
        let mut stdin = shim_demo::fifo::open_writer(&fifos.stdin()).expect("stdin");
        api.create_task("cat", &fifos).await.expect("create");
        api.start_task("cat").await.expect("start");
        let input = "line one\nline two\n".repeat(1000);
        stdin.write_all(input.as_bytes()).await.expect("write");
        drop(stdin);
        api.close_stdin("cat").await.expect("CloseIO");
        let code = tokio::time::timeout(Duration::from_secs(10), api.wait("cat"))
            .await
            .expect("cat ends after CloseIO")
            .expect("wait");
        assert_eq!(code, 0, "cat saw end-of-file and exited normally");
        let mut echoed = vec![0u8; input.len()];
        tokio::time::timeout(Duration::from_secs(5), stdout.read_exact(&mut echoed))
            .await
            .expect("all output")
            .expect("read");
        assert_eq!(
            String::from_utf8_lossy(&echoed),
            input,
            "the whole input came back"
        );
        api.delete_task("cat").await.expect("delete");
        api.delete_container("cat").await.expect("container rm");
        fifos.remove();
    });
    cd.wait_shims_gone();
}

#[test]
fn exec_processes_have_their_own_exit_codes_events_and_errors() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    cd.run_detached("host", &["sleep", "1000"]);

    let out = cd.ctr_output(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "host",
        "sh",
        "-c",
        "echo in-exec; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-exec\n");
    let seen = topics_until(&lines, "host", "/tasks/exit");
    assert_eq!(
        topics(&seen),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit"
        ]
    );
    assert!(
        seen[4].1.contains("\"id\":\"e1\"") && seen[4].1.contains("\"exit_status\":3"),
        "{}",
        seen[4].1
    );

    // A 20,000-character argument goes through untouched.
    let big = "x".repeat(20_000);
    let out = cd.ctr_output(&[
        "task",
        "exec",
        "--exec-id",
        "big",
        "host",
        "sh",
        "-c",
        "echo ${#1}",
        "_",
        &big,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "20000\n");

    // A duplicate exec id is refused while the first one lives.
    let (mut first, _) = cd.spawn_ctr(&["task", "exec", "--exec-id", "same", "host", "sleep", "3"]);
    wait_exec_started(&lines, "same");
    let out = cd.ctr_output(&["task", "exec", "--exec-id", "same", "host", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
    let _ = first.kill();
    let _ = first.wait();

    // An exec still running when the task stops: its exit comes before the init's.
    let (mut long, _) =
        cd.spawn_ctr(&["task", "exec", "--exec-id", "long", "host", "sleep", "1000"]);
    wait_exec_started(&lines, "long");
    cd.ctr_ok(&["task", "kill", "host"]);
    cd.wait_status("host", "STOPPED");
    let _ = long.wait();
    let mut exits = Vec::new();
    while let Some(line) = wait_line(&lines, Duration::from_secs(10), |l| {
        l.contains(" /tasks/exit ")
    }) {
        if line.contains("\"id\":\"long\"") || line.contains("\"id\":\"host\"") {
            let init = line.contains("\"id\":\"host\"");
            exits.push(line);
            if init {
                break;
            }
        }
    }
    let order: Vec<bool> = exits
        .iter()
        .map(|l| l.contains("\"id\":\"long\""))
        .collect();
    assert_eq!(
        order,
        [true, false],
        "exec exit first, then the init's: {exits:#?}"
    );

    // No exec into a stopped task.
    let out = cd.ctr_output(&["task", "exec", "--exec-id", "late", "host", "true"]);
    assert!(!out.status.success(), "exec into a stopped task must fail");
    cd.ctr_output(&["task", "rm", "host"]);
    cd.ctr_ok(&["container", "rm", "host"]);
    cd.wait_shims_gone();
}

#[test]
fn a_terminal_task_sees_the_window_size_ctr_sets() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let image = cd.import_image();
    // `ctr run -t` wants a terminal: `script` gives it one, sized 40x100 by `stty`; ctr
    // passes the size on with ResizePty, and `stty size` inside reads it back.
    let ctr = format!(
        "stty rows 40 cols 100; {} --address {} --namespace {} run -t --rm --runtime {RUNTIME} --annotation {SPEC_MODE} \
         {image} tty sh -c 'sleep 0.5; stty size; tty'",
        cd.ctr_path().display(),
        cd.address.display(),
        cd.namespace()
    );
    let out = Command::new("script")
        .args(["-qfec", &ctr, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script (bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("40 100"),
        "stty size inside the task: {text:?}"
    );
    assert!(
        text.contains("/dev/pts/"),
        "the task's stdin is a pty: {text:?}"
    );
    cd.wait_shims_gone();
}

#[test]
fn pause_resume_and_metrics() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    let pid = cd.run_detached("pausable", &["sh", "-c", "while true; do sleep 0.1; done"]);

    cd.ctr_ok(&["task", "pause", "pausable"]);
    assert_eq!(
        cd.task_status("pausable").map(|t| t.1).as_deref(),
        Some("PAUSED")
    );
    // Frozen: its cgroup's freezer holds it (and whatever it forks).
    let path = format!("/{}/pausable", cd.namespace());
    assert!(integration::cgroupfs::frozen(&path), "the task is frozen");
    assert!(
        integration::cgroupfs::read("freezer", &path, "cgroup.procs")
            .lines()
            .any(|l| l == pid.to_string())
    );
    cd.ctr_ok(&["task", "resume", "pausable"]);
    assert_eq!(
        cd.task_status("pausable").map(|t| t.1).as_deref(),
        Some("RUNNING")
    );
    assert!(!integration::cgroupfs::frozen(&path), "the task is thawed");
    let seen = topics_until(&lines, "pausable", "/tasks/resumed");
    assert_eq!(&topics(&seen)[2..], ["/tasks/paused", "/tasks/resumed"]);

    // What `ctr task metrics` decodes: the task's memory and pids, and its CPU time (which
    // may still read 0: `sh` between two `sleep`s uses less than a clock tick).
    let metrics = cd.ctr_ok(&["task", "metrics", "pausable"]);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    // The table names the figures of the cgroup's version.
    let (memory, cpu) = if integration::cgroupfs::v2() {
        ("memory.usage", "cpu.usage_usec")
    } else {
        ("memory.usage_in_bytes", "cpuacct.usage")
    };
    assert!(value(memory) > 100_000, "{metrics}");
    assert!(value("pids.current") >= 1, "{metrics}");
    let _ = value(cpu);

    cd.kill_and_remove("pausable", "SIGKILL");
    cd.wait_shims_gone();
}

#[test]
fn a_missing_binary_fails_at_create_and_leaves_nothing() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (code, _, stderr) = run(&cd, "missing", &["no-such-binary-here"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no-such-binary-here") && stderr.contains("not found"),
        "{stderr}"
    );
    cd.wait_shims_gone();
    assert_eq!(cd.task_status("missing"), None);
}

#[test]
fn a_client_that_detaches_does_not_close_stdin_and_reattaching_works() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    cd.run_detached("cat", &["cat"]);
    for word in ["first", "second"] {
        // `ctr task attach` copies its stdin into the task's stdin FIFO; when our pipe
        // closes, ctr stops copying, which must not close the task's stdin.
        let mut attach = cd
            .ctr()
            .args(["task", "attach", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ctr task attach");
        let stdout = attach.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut stdin = attach.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{word}\n").as_bytes())
            .expect("write");
        drop(stdin);
        let echoed = wait_line(&rx, Duration::from_secs(10), |l| l == word);
        assert_eq!(
            echoed.as_deref(),
            Some(word),
            "cat echoed what this attach sent"
        );
        let _ = attach.kill(); // detach
        let _ = attach.wait();
        assert_eq!(
            cd.task_status("cat").map(|t| t.1).as_deref(),
            Some("RUNNING"),
            "cat got no EOF"
        );
    }
    cd.kill_and_remove("cat", "SIGTERM");
    cd.wait_shims_gone();
}

/// The daemon serves the task API under both of containerd's names: `containerd.task.v2.Task`
/// and `containerd.task.v3.Task` (containerd 2.x, and tools that dial a shim themselves, as
/// containerd's own CRI tests do). Both answer `Connect` with the same pids. containerd 2.3
/// sends `BootstrapParams` to `start`, which answers version 3: its `bootstrap.json` says so;
/// older ones get a plain address and speak v2.
#[test]
fn the_task_api_answers_as_v2_and_v3() {
    use containerd_shim_protos::{
        protobuf::Message,
        shim::shim::{ConnectRequest, ConnectResponse},
        ttrpc::{sync::Client, Request},
    };
    let Some(cd) = Containerd::start() else {
        return;
    };
    let args = cd.run_args("-d", "both", &["sleep", "1000"]);
    cd.ctr_ok(&args);
    let pid = cd.wait_status("both", "RUNNING");
    let shim = cd.the_shim();
    let socket = integration::pod::socket_of(shim);
    let client = Client::connect(&format!("unix://{}", socket.display())).expect("dial the shim");
    for service in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        let request = ConnectRequest {
            id: "both".into(),
            ..Default::default()
        };
        let response = client
            .request(Request {
                service: service.into(),
                method: "Connect".into(),
                payload: request.write_to_bytes().expect("encode"),
                timeout_nano: 5_000_000_000,
                ..Default::default()
            })
            .unwrap_or_else(|err| panic!("{service}/Connect: {err:?}"));
        let answer = ConnectResponse::parse_from_bytes(&response.payload).expect("decode");
        assert_eq!(
            (answer.shim_pid as i32, answer.task_pid as i32),
            (shim, pid),
            "{service}"
        );
    }
    let version = cd.server_version();
    let bootstrap = cd
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(cd.namespace())
        .join("both/bootstrap.json");
    let said = std::fs::read_to_string(&bootstrap).unwrap_or_default();
    eprintln!("containerd {version}: bootstrap.json {said:?}");
    let v3 = !(version.starts_with("1.")
        || version.starts_with("v1.")
        || version.starts_with("2.0")
        || version.starts_with("2.1")
        || version.starts_with("2.2"));
    if v3 {
        assert!(
            said.contains("\"version\":3"),
            "containerd {version} speaks v3: {said}"
        );
    } else {
        assert!(
            !said.contains("\"version\":3"),
            "containerd {version} speaks v2: {said}"
        );
    }
    cd.kill_and_remove("both", "SIGKILL");
}
