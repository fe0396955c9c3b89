//! The OCI mode: real containers through an OCI runtime (runc, then crun), driven by `ctr`.
//!
//! Each test runs its steps with every runtime in [`RUNTIMES`], in one private containerd.
//! The runtime is chosen per container, as a user chooses it: `ctr run
//! --runtime-config-path FILE`, where FILE says `binary_name = "runc"` (or `"crun"`). The
//! image is busybox, made offline (`integration::image::BUSYBOX`).

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use integration::{proc, stderr, wait_line, Containerd, RUNTIME};

/// The OCI runtimes every test runs with (Debian's `runc` and `crun`), as far as this
/// containerd's specs allow: see [`runtimes`].
const RUNTIMES: &[&str] = &["runc", "crun"];

/// True for containerd 1.x, whose `ctr` ends an error with its gRPC code in words.
fn one_x(cd: &Containerd) -> bool {
    cd.server_version().starts_with("1.")
}

/// The runtimes of [`RUNTIMES`] this containerd can drive. Debian 12's crun (1.8) accepts
/// only runtime spec 1.0.x, and containerd 1.7 and 2.x write 1.1 and 1.2 specs: crun
/// refuses them ("unknown version specified"), under containerd's own runc-v2 shim
/// (`ctr run --runc-binary crun`) exactly as under ours. Then, and only with containerd
/// 1.7 or later, crun is left out, after checking that both shims report crun's refusal,
/// and the test says so loudly. On 1.6 crun must run.
fn runtimes(cd: &Containerd) -> Vec<&'static str> {
    let id = "crun-probe";
    let ours = run(cd, "crun", &["--rm"], id, &["true"]);
    if ours.status.success() {
        return RUNTIMES.to_vec();
    }
    let refusal = "unknown version specified";
    let version = cd.server_version();
    assert!(
        !version.starts_with("1.6") && stderr(&ours).contains(refusal),
        "crun failed under our shim on containerd {version}: {}",
        stderr(&ours)
    );
    cd.ctr_output(&["container", "rm", id]);
    let image = cd.import_busybox();
    let theirs = cd.ctr_output(&["run", "--rm", "--runc-binary", "crun", image, id, "true"]);
    assert!(
        stderr(&theirs).contains(refusal),
        "runc-v2 with crun on containerd {version}: {}",
        stderr(&theirs)
    );
    cd.ctr_output(&["container", "rm", id]);
    eprintln!(
        "\n!!!!!!!! crun LEFT OUT on containerd {version}: Debian 12's crun refuses its runtime \
         spec version ({refusal}), under runc-v2 as under ours; runc only\n"
    );
    vec!["runc"]
}

/// A hog that makes itself the OOM killer's first choice, as in `cgroups.rs`.
const HOG: &str =
    "echo 1000 > /proc/self/oom_score_adj; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived";

/// Writes an options file with `text`; returns its path.
fn options_file(cd: &Containerd, name: &str, text: &str) -> String {
    let path: PathBuf = cd.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the options file");
    path.display().to_string()
}

/// The options file selecting `binary`.
fn config(cd: &Containerd, binary: &str) -> String {
    options_file(cd, binary, &format!("BinaryName = \"{binary}\"\n"))
}

/// The arguments of `ctr run <flags>` of `args` in busybox as `id`, in the OCI mode with
/// the options file `config`.
fn run_args<'a>(
    cd: &Containerd,
    config: &'a str,
    flags: &[&'a str],
    id: &'a str,
    args: &[&'a str],
) -> Vec<&'a str> {
    let mut full = vec!["run"];
    full.extend_from_slice(flags);
    full.extend_from_slice(&["--runtime", RUNTIME, "--runtime-config-path", config]);
    full.extend_from_slice(&[cd.import_busybox(), id]);
    full.extend_from_slice(args);
    full
}

/// `ctr run <flags>` in the OCI mode with `binary`.
fn run(cd: &Containerd, binary: &str, flags: &[&str], id: &str, args: &[&str]) -> Output {
    let config = config(cd, binary);
    cd.ctr_output(&run_args(cd, &config, flags, id, args))
}

/// Mount points whose path mentions `id` (the container's root filesystem).
fn mounts_of(id: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mount| mount.contains(&format!("/{id}/")))
        .map(str::to_string)
        .collect()
}

/// The `/tasks/*` topics of `id`'s events, up to its `/tasks/delete`.
fn topics_until_delete(lines: &std::sync::mpsc::Receiver<String>, id: &str) -> Vec<String> {
    let mut topics = Vec::new();
    let needle = format!("\"container_id\":\"{id}\"");
    while let Some(line) = wait_line(lines, Duration::from_secs(15), |l| l.contains(&needle)) {
        let Some(topic) = line.split_whitespace().find(|w| w.starts_with("/tasks/")) else {
            continue;
        };
        topics.push(
            format!(
                "{topic} {}",
                if line.contains("\"exit_status\":137") {
                    "137"
                } else {
                    ""
                }
            )
            .trim()
            .to_string(),
        );
        if topic == "/tasks/delete" {
            break;
        }
    }
    topics
}

#[test]
fn a_container_is_pid_1_in_the_image_root_and_exits_with_its_code() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").expect("our mount namespace");
    for binary in runtimes(&cd) {
        let id = format!("exit-{binary}");
        let script = "echo pid $$; readlink /proc/self/ns/mnt; ls /; echo oops >&2; exit 3";
        let out = run(&cd, binary, &["--rm"], &id, &["sh", "-c", script]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{binary}: {stdout}\n{}",
            stderr(&out)
        );
        assert_eq!(
            lines.first(),
            Some(&"pid 1"),
            "{binary}: its own pid namespace"
        );
        assert_ne!(
            lines.get(1).copied(),
            Some(host_mnt.to_string_lossy().as_ref()),
            "{binary}: its own mount namespace"
        );
        // The image's root: busybox's directories, none of the host's (`usr`, `var`).
        let root: Vec<&str> = lines[2..].to_vec();
        assert!(
            root.contains(&"bin") && root.contains(&"proc"),
            "{binary}: {root:?}"
        );
        assert!(
            !root.contains(&"usr") && !root.contains(&"var"),
            "{binary}: {root:?}"
        );
        assert_eq!(stderr(&out), "oops\n", "{binary}: exact stderr");
        assert!(
            mounts_of(&id).is_empty(),
            "{binary}: rootfs unmounted: {:?}",
            mounts_of(&id)
        );
    }
    cd.wait_shims_gone();
}

#[test]
fn signals_execs_pause_and_metrics_as_under_runc_v2() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    for binary in runtimes(&cd) {
        let id = format!("life-{binary}");
        let out = run(&cd, binary, &["-d"], &id, &["sleep", "1000"]);
        assert!(out.status.success(), "{binary}: {}", stderr(&out));
        let init = cd.wait_status(&id, "RUNNING");

        // An exec runs inside the container: pid 1 there is the init.
        let out = cd.ctr_output(&[
            "task",
            "exec",
            "--exec-id",
            "look",
            &id,
            "sh",
            "-c",
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$; exit 5",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let seen: Vec<&str> = stdout.lines().collect();
        assert_eq!(seen.first(), Some(&"sleep 1000 "), "{binary}: {stdout}");
        let exec_pid: i32 = seen.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        assert!(
            exec_pid > 1 && exec_pid < 100,
            "{binary}: a pid of the container's namespace: {stdout}"
        );
        assert_eq!(out.status.code(), Some(5), "{binary}: {}", stderr(&out));

        // An exec's SIGTERM: 143. The exec is no pid 1: the default action kills it.
        let out = cd.ctr_output(&[
            "task",
            "exec",
            "--detach",
            "--exec-id",
            "term",
            &id,
            "sleep",
            "2000",
        ]);
        assert!(out.status.success(), "{binary}: {}", stderr(&out));
        thread::sleep(Duration::from_millis(200));
        cd.ctr_ok(&[
            "task",
            "kill",
            "--exec-id",
            "term",
            "--signal",
            "SIGTERM",
            &id,
        ]);
        let exit = wait_line(&lines, Duration::from_secs(10), |l| {
            l.contains("/tasks/exit") && l.contains("\"id\":\"term\"") && l.contains(&id)
        })
        .unwrap_or_else(|| panic!("{binary}: no /tasks/exit for the exec"));
        assert!(exit.contains("\"exit_status\":143"), "{binary}: {exit}");

        // Pids lists the container's processes with their host pids.
        let pids = cd.ctr_ok(&["task", "ps", &id]);
        assert!(pids.contains(&init.to_string()), "{binary}: {pids}");

        cd.ctr_ok(&["task", "pause", &id]);
        assert_eq!(
            cd.task_status(&id).map(|t| t.1).as_deref(),
            Some("PAUSED"),
            "{binary}"
        );
        cd.ctr_ok(&["task", "resume", &id]);
        assert_eq!(
            cd.task_status(&id).map(|t| t.1).as_deref(),
            Some("RUNNING"),
            "{binary}"
        );

        let metrics = cd.ctr_ok(&["task", "metrics", &id]);
        assert!(
            metrics.contains("memory.usage_in_bytes") || metrics.contains("memory.usage"),
            "{binary}: {metrics}"
        );

        // A pid 1 with no handler ignores SIGTERM, as under runc; SIGKILL ends it: 137.
        cd.ctr_ok(&["task", "kill", "--signal", "SIGTERM", &id]);
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            cd.task_status(&id).map(|t| t.1).as_deref(),
            Some("RUNNING"),
            "{binary}: SIGTERM ignored"
        );
        cd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", &id]);
        let exit = wait_line(&lines, Duration::from_secs(10), |l| {
            l.contains("/tasks/exit") && l.contains(&format!("\"id\":\"{id}\""))
        })
        .unwrap_or_else(|| panic!("{binary}: no /tasks/exit for the init"));
        assert!(exit.contains("\"exit_status\":137"), "{binary}: {exit}");
        cd.ctr_output(&["task", "rm", &id]);
        cd.ctr_ok(&["container", "rm", &id]);
        assert!(!proc::alive(init), "{binary}: the init is gone");
        assert!(mounts_of(&id).is_empty(), "{binary}: {:?}", mounts_of(&id));
    }
    cd.wait_shims_gone();
}

#[test]
fn a_terminal_is_the_container_s_own() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    for binary in runtimes(&cd) {
        let config = config(&cd, binary);
        // `ctr run -t` wants a terminal: `script` gives it one, sized 40x100 by `stty`.
        let ctr = format!(
            "stty rows 40 cols 100; {} --address {} --namespace {} run -t --rm --runtime {RUNTIME} \
             --runtime-config-path {config} {} tty-{binary} sh -c 'sleep 0.5; stty size; tty; echo $$'",
            cd.ctr_path().display(),
            cd.address.display(),
            cd.namespace(),
            cd.import_busybox(),
        );
        let out = Command::new("script")
            .args(["-qfec", &ctr, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("run script (bsdutils)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("40 100"),
            "{binary}: stty size inside: {text:?}"
        );
        assert!(
            text.contains("/dev/pts/0"),
            "{binary}: the container's own devpts: {text:?}"
        );
        assert!(
            text.lines().any(|l| l.trim() == "1"),
            "{binary}: pid 1: {text:?}"
        );
    }
    cd.wait_shims_gone();
}

#[test]
fn the_oom_kill_is_reported_before_the_exit_under_a_memory_limit() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    for binary in runtimes(&cd) {
        let id = format!("hog-{binary}");
        let out = run(
            &cd,
            binary,
            &["--rm", "--memory-limit", "33554432"],
            &id,
            &["sh", "-c", HOG],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("survived"),
            "{binary}: the limit held: {stdout}"
        );
        assert_eq!(out.status.code(), Some(137), "{binary}: {}", stderr(&out));
        let mut topics = topics_until_delete(&lines, &id);
        // The hog's pipeline is three processes: the OOM killer may take two of them, one
        // `/tasks/oom` each (seen once on containerd 2.1), all before the exit.
        topics.dedup();
        let wanted = [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit 137",
            "/tasks/delete 137",
        ];
        assert_eq!(topics, wanted, "{binary}");
    }
    cd.wait_shims_gone();
}

#[test]
fn no_process_outlives_the_init_not_even_a_setsid_daemon() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let daemons = || {
        proc::all_pids()
            .into_iter()
            .filter(|&p| proc::cmdline(p) == ["sleep", "9876"])
            .collect::<Vec<_>>()
    };
    for binary in runtimes(&cd) {
        let id = format!("leak-{binary}");
        let script = "setsid sleep 9876 & sleep 0.3; exit 0";
        let out = run(&cd, binary, &["--rm"], &id, &["sh", "-c", script]);
        assert_eq!(out.status.code(), Some(0), "{binary}: {}", stderr(&out));
        assert!(
            daemons().is_empty(),
            "{binary}: the daemon outlived its init: {:?}",
            daemons()
        );
    }
    cd.wait_shims_gone();
}

#[test]
fn a_shim_killed_with_sigkill_leaves_no_process_and_no_mount() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    for binary in runtimes(&cd) {
        let id = format!("crash-{binary}");
        let out = run(&cd, binary, &["-d"], &id, &["sleep", "1000"]);
        assert!(out.status.success(), "{binary}: {}", stderr(&out));
        let init = cd.wait_status(&id, "RUNNING");
        assert!(
            !mounts_of(&id).is_empty(),
            "{binary}: the root filesystem is mounted"
        );
        let shim = cd.the_shim();
        // SAFETY: a plain system call on the shim we just identified.
        unsafe { libc::kill(shim, libc::SIGKILL) };
        let exit = wait_line(&lines, Duration::from_secs(15), |l| {
            l.contains("/tasks/exit") && l.contains(&format!("\"container_id\":\"{id}\""))
        })
        .unwrap_or_else(|| panic!("{binary}: no /tasks/exit after the shim died"));
        assert!(exit.contains("\"exit_status\":137"), "{binary}: {exit}");
        // `delete` reports the pid the shim recorded, as runc-v2's does.
        assert!(
            exit.contains(&format!("\"pid\":{init}")),
            "{binary}: the init's pid {init} in {exit}"
        );
        integration::poll_until(Duration::from_secs(5), "the init to go", || {
            (!proc::alive(init)).then_some(())
        });
        assert!(mounts_of(&id).is_empty(), "{binary}: {:?}", mounts_of(&id));
        cd.ctr_output(&["task", "rm", &id]);
        cd.ctr_ok(&["container", "rm", &id]);
        cd.wait_shims_gone();
    }
}

#[test]
fn bad_configurations_and_runtime_errors_are_refused_and_leave_nothing() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let not_executable = cd.dir().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
    let missing = cd.dir().join("missing.toml").display().to_string();
    let cases = [
        (missing, "cannot be read".to_string()),
        (
            options_file(
                &cd,
                "unknown",
                "BinaryName = \"runc\"\nsystemd_cgroup = true\n",
            ),
            "unknown key \"systemd_cgroup\"".into(),
        ),
        (
            options_file(&cd, "nobinary", "binary_name = \"no-such-runtime\"\n"),
            "not an executable on the shim's PATH".into(),
        ),
        (
            options_file(
                &cd,
                "noexec",
                &format!("binary_name = \"{}\"\n", not_executable.display()),
            ),
            "is not an executable file".into(),
        ),
        (
            options_file(&cd, "typed", "SystemdCgroup = \"false\"\n"),
            "SystemdCgroup takes true or false".into(),
        ),
        (
            options_file(
                &cd,
                "contradiction",
                "mode = \"host\"\nBinaryName = \"runc\"\n",
            ),
            "take no OCI runtime option (got BinaryName)".into(),
        ),
    ];
    for (index, (config, needle)) in cases.iter().enumerate() {
        let id = format!("bad-{index}");
        let out = cd.ctr_output(&run_args(&cd, config, &["--rm"], &id, &["true"]));
        assert!(!out.status.success(), "{needle}: ctr run succeeded");
        assert!(
            stderr(&out).contains(needle.as_str()),
            "{needle}: {}",
            stderr(&out)
        );
        // containerd 2.x's ctr leaves the code's words out of the message.
        assert!(
            !one_x(&cd) || stderr(&out).contains("invalid argument"),
            "InvalidArgument: {}",
            stderr(&out)
        );
        cd.ctr_output(&["container", "rm", &id]);
    }
    // The runtime's own error reaches the client.
    for binary in runtimes(&cd) {
        let id = format!("notfound-{binary}");
        let out = run(&cd, binary, &["--rm"], &id, &["no-such-command"]);
        assert!(!out.status.success(), "{binary}: ctr run succeeded");
        let text = stderr(&out);
        assert!(
            text.contains(binary) && text.contains("no-such-command") && text.contains("not found"),
            "{binary}: {text}"
        );
        cd.ctr_output(&["container", "rm", &id]);
        assert!(mounts_of(&id).is_empty(), "{binary}: {:?}", mounts_of(&id));
    }
    assert!(cd.tasks().is_empty(), "no task left: {:?}", cd.tasks());
    cd.wait_shims_gone();
}

/// A terminal is held once: the shim keeps one handle on a container's pty master (its
/// copies and `ResizePty` share it), as runc-v2 does (containerd's CRI test
/// `TestContainerTTYLeakAfterExit` counts them); an exec's terminal adds one while it runs
/// and none after.
#[test]
fn a_terminal_is_held_once() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let ptmx = |shim: i32| {
        std::fs::read_dir(format!("/proc/{shim}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.ends_with("ptmx")))
            .count()
    };
    // `ctr ... -t` wants a terminal: `script` gives it one.
    let on_a_terminal = |args: &str| {
        let ctr = format!(
            "{} --address {} --namespace {} {args}",
            cd.ctr_path().display(),
            cd.address.display(),
            cd.namespace(),
        );
        Command::new("script")
            .args(["-qfec", &ctr, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("run script (bsdutils)")
    };
    let config = config(&cd, "runc");
    let out = on_a_terminal(&format!(
        "run -d -t --runtime {RUNTIME} --runtime-config-path {config} {} tty sleep 1000",
        cd.import_busybox()
    ));
    assert!(out.status.success(), "{out:?}");
    cd.wait_status("tty", "RUNNING");
    let shim = cd.the_shim();
    assert_eq!(ptmx(shim), 1, "one handle on the init's terminal");
    let out = on_a_terminal("task exec -t --exec-id e1 tty sh -c 'echo in-exec'");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("in-exec"),
        "{out:?}"
    );
    integration::poll_until(Duration::from_secs(5), "the exec's terminal to go", || {
        (ptmx(shim) == 1).then_some(())
    });
    cd.kill_and_remove("tty", "SIGKILL");
}
