//! Defects a user or a review found, each tried again the way it was found: through `ctr`,
//! against a private containerd. (Their in-process twins, which provoke the exact ordering,
//! are in `shim/tests/core.rs` and `shim/src/exits.rs`.)

use std::{
    fs,
    process::{Command, Stdio},
    time::Duration,
};

use integration::{poll_until, proc, stderr, Containerd, RUNTIME, SPEC_MODE};

/// A task started with a terminal leads a session of its own; a plain exec used to ask to
/// join its process group, in another session, and failed (the old message: `spawn the init
/// helper: Operation not permitted`). containerd's runc shim prints `hi` and exits 3.
#[test]
fn a_plain_exec_into_a_terminal_task_runs() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let image = cd.import_image();
    // `ctr run -t` wants a terminal even when detached: `script` gives it one.
    let ctr = format!(
        "{} --address {} --namespace {} run -d -t --runtime {RUNTIME} --annotation {SPEC_MODE} {image} tty sleep 1000",
        cd.ctr_path().display(),
        cd.address.display(),
        cd.namespace()
    );
    let out = Command::new("script")
        .args(["-qfec", &ctr, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script (bsdutils)");
    assert!(out.status.success(), "ctr run -d -t: {out:?}");
    let init = cd.wait_status("tty", "RUNNING");
    assert_eq!(
        proc::sid(init),
        Some(init),
        "a terminal task leads its session"
    );

    let out = cd.ctr_output(&[
        "task",
        "exec",
        "--exec-id",
        "x",
        "tty",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hi",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    cd.kill_and_remove("tty", "KILL");
    cd.wait_shims_gone();
}

/// 2,100 environment variables of 1 KiB (with the usual stack limit) are more than one
/// `execve` takes: that is the caller's input, so `invalid argument` naming the limit, not
/// `unknown`; nothing is left.
#[test]
fn an_environment_too_large_for_execve_is_an_invalid_argument() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    // containerd and the shim inherit this test's stack limit, so its ARG_MAX: 2 MiB with
    // the usual 8 MiB, where 2,100 variables of 1 KiB are just over.
    // SAFETY: sysconf has no preconditions.
    let arg_max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) }.max(0) as usize;
    assert!(
        arg_max <= 3 << 20,
        "this test needs ARG_MAX at most 3 MiB (a stack limit of 12 MiB at most; `ulimit -s`), \
         so that a spec over it stays under the shim's 4 MiB cap on config.json; here {arg_max}"
    );
    let env_file = cd.dir().join("big.env");
    let value = "v".repeat(1024);
    let lines: Vec<String> = (0..arg_max / 1000 + 50)
        .map(|i| format!("VAR{i}={value}"))
        .collect();
    fs::write(&env_file, lines.join("\n")).expect("write the env file");
    let env_file = env_file.display().to_string();
    let mut args = cd.run_args("-d", "big", &["true"]);
    args.splice(1..1, ["--env-file", env_file.as_str()]);
    let out = cd.ctr_output(&args);
    let message = stderr(&out);
    assert!(!out.status.success(), "ctr run succeeded: {message}");
    assert!(message.contains("ARG_MAX"), "{message}");
    assert!(!message.contains("unknown"), "{message}");
    // ctr 1.x names the gRPC code at the end of its message; 2.x prints the message alone.
    if cd.server_version().starts_with("1.") {
        assert!(message.contains("invalid argument"), "{message}");
    }

    assert_eq!(cd.task_status("big"), None, "no task is left");
    cd.ctr_output(&["container", "rm", "big"]);
    cd.wait_shims_gone();
}

/// A task whose children keep forking and exiting when it is killed: the exit policy must
/// kill every one of them, including those the kernel's `children` lists miss while their
/// siblings exit. Afterwards the shim, still serving the stopped task, has no live child.
#[test]
fn a_task_that_forks_while_it_dies_leaves_no_process_behind() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    // Each round leaves an orphaned `sleep` (re-parented to the shim) and a subshell that
    // exits at once: plenty of children exiting while the shim looks.
    cd.run_detached(
        "churn",
        &["sh", "-c", "while :; do sh -c 'sleep 1000 & exit 0'; done"],
    );
    let shim = cd.the_shim();
    poll_until(Duration::from_secs(10), "100 orphaned sleeps", || {
        let sleeps = proc::children(shim)
            .into_iter()
            .filter(|&p| proc::comm(p) == "sleep")
            .count();
        (sleeps >= 100).then_some(())
    });
    cd.ctr_ok(&["task", "kill", "--signal", "KILL", "churn"]);
    cd.wait_status("churn", "STOPPED");
    let live: Vec<(i32, String)> = proc::descendants(shim)
        .into_iter()
        .filter(|&p| proc::stat(p).is_some_and(|(state, ..)| state != 'Z'))
        .map(|p| (p, proc::comm(p)))
        .collect();
    assert!(live.is_empty(), "processes outlived their task: {live:?}");
    cd.ctr_output(&["task", "rm", "churn"]);
    cd.ctr_ok(&["container", "rm", "churn"]);
    cd.wait_shims_gone();
}
