//! Log URIs through `ctr run --log-uri`: `file://` and `binary://` (`logs.rs` in the shim),
//! the example logger (`logger/`), and the URIs the shim refuses.

use std::{fs, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use integration::{logger_binary, poll_until, proc, stderr, Containerd};

/// 100,000 numbered lines on stdout, with a line on stderr every 10,000.
const BURST: &str = "i=0; while [ $i -lt 100000 ]; do echo \"line $i\"; \
    [ $((i % 10000)) -eq 0 ] && echo \"err $i\" >&2; i=$((i+1)); done";

/// `ctr run --rm --log-uri <uri>` of `args` as task `id`, whatever its exit code.
fn run_logged(cd: &Containerd, uri: &str, id: &str, args: &[&str]) -> std::process::Output {
    let mut full = cd.run_args("--rm", id, args);
    full.insert(2, "--log-uri");
    full.insert(3, uri);
    cd.ctr_output(&full)
}

/// Asserts `lines` are `line 0` to `line 99999`, in order.
fn assert_burst(lines: &[String]) {
    assert_eq!(lines.len(), 100_000, "lines: {}", lines.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line, &format!("line {i}"), "line {i}");
    }
}

#[test]
fn file_uri_appends_stdout_and_stderr_to_one_file() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("made/by/the/shim/task.log");
    let uri = format!("file://{}", log.display());
    let out = run_logged(
        &cd,
        &uri,
        "filelog",
        &["sh", "-c", "echo one; echo two >&2; echo three"],
    );
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing reaches ctr: {out:?}");
    assert_eq!(
        fs::read_to_string(&log).expect("the log"),
        "one\ntwo\nthree\n"
    );
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o644);
    assert_eq!(mode(log.parent().expect("dir")), 0o755);

    // Appended to, and complete under a burst.
    fs::write(&log, "").expect("truncate");
    let out = run_logged(&cd, &uri, "burst", &["sh", "-c", BURST]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    let text = fs::read_to_string(&log).expect("the log");
    let (lines, errs): (Vec<String>, Vec<String>) = text
        .lines()
        .map(str::to_string)
        .partition(|l| l.starts_with("line "));
    assert_burst(&lines);
    assert_eq!(errs.len(), 10, "{errs:?}");
    cd.wait_shims_gone();
}

#[test]
fn binary_uri_runs_the_example_logger() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("logs/app.log");
    let uri = format!(
        "binary://{}?path={}&max-size=1073741824",
        logger_binary().display(),
        log.display()
    );
    let out = run_logged(
        &cd,
        &uri,
        "binlog",
        &["sh", "-c", "echo one; echo two >&2; printf three"],
    );
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    // CRI lines: time, stream, F, text.
    let lines: Vec<(String, String)> = fs::read_to_string(&log)
        .expect("the log")
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(fields[0].ends_with('Z') && fields[2] == "F", "{l}");
            (fields[1].to_string(), fields[3].to_string())
        })
        .collect();
    let of = |stream: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, t)| t.clone())
            .collect()
    };
    assert_eq!(of("stdout"), ["one", "three"]);
    assert_eq!(of("stderr"), ["two"]);

    fs::remove_file(&log).expect("remove");
    let out = run_logged(&cd, &uri, "binburst", &["sh", "-c", BURST]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    let text = fs::read_to_string(&log).expect("the log");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains(" stdout F "))
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect();
    assert_burst(&lines);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" stderr F err "))
            .count(),
        10
    );
    // The logger is gone with its task (it ends at end-of-file, or at the shim's SIGTERM).
    poll_until(Duration::from_secs(15), "no logger left", || {
        proc::all_pids()
            .into_iter()
            .all(|p| {
                !proc::cmdline(p)
                    .first()
                    .is_some_and(|a| a.ends_with("sample-logger"))
            })
            .then_some(())
    });
    cd.wait_shims_gone();
}

/// The logging-binary protocol, seen from a logger: its arguments, its environment
/// (exactly `CONTAINER_ID` and `CONTAINER_NAMESPACE`, as from containerd's runc shim),
/// stdout on fd 3, stderr on fd 4.
#[test]
fn a_logger_gets_the_query_its_environment_and_both_streams() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let logger = dir.path().join("logger.sh");
    fs::write(
        &logger,
        "#!/bin/sh\n\
         # $1 $2 = dir <directory>, $3 $4 = tag <word>\n\
         echo \"$@\" > \"$2/args\"\n\
         env > \"$2/env\"\n\
         exec 5>&-\n\
         cat <&3 > \"$2/out\" & cat <&4 > \"$2/err\" & wait\n",
    )
    .expect("write the logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod");
    let uri = format!(
        "binary://{}?dir={}&tag=hello%20world",
        logger.display(),
        dir.path().display()
    );
    let out = run_logged(&cd, &uri, "envlog", &["sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    let read = |name: &str| fs::read_to_string(dir.path().join(name)).expect(name);
    poll_until(Duration::from_secs(5), "the logger's copies", || {
        (read("out") == "out\n" && read("err") == "err\n").then_some(())
    });
    assert_eq!(
        read("args").trim(),
        format!("dir {} tag hello world", dir.path().display())
    );
    let env = read("env");
    assert!(env.lines().any(|l| l == "CONTAINER_ID=envlog"), "{env}");
    assert!(
        env.lines()
            .any(|l| l == format!("CONTAINER_NAMESPACE={}", cd.namespace())),
        "{env}"
    );
    assert!(
        !env.contains("TTRPC_ADDRESS") && !env.contains("GRPC_ADDRESS"),
        "{env}"
    );
    cd.wait_shims_gone();
}

/// A URI the shim cannot honour fails `Create` (`InvalidArgument`) saying why, and
/// leaves nothing: no task, no shim, no logger, no file.
#[test]
fn bad_log_uris_are_refused_and_leave_nothing() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let quitter = dir.path().join("quitter.sh");
    fs::write(&quitter, "#!/bin/sh\nexit 3\n").expect("write");
    fs::set_permissions(&quitter, fs::Permissions::from_mode(0o755)).expect("chmod");
    for (uri, why) in [
        ("syslog:///dev/log".to_string(), "unknown scheme"),
        ("file://relative/x.log".to_string(), "must be absolute"),
        ("binary:///no/such/logger".to_string(), "cannot start"),
        (
            format!("binary://{}", quitter.display()),
            "exited before it was ready",
        ),
    ] {
        let out = run_logged(&cd, &uri, "bad", &["true"]);
        assert!(!out.status.success(), "{uri} was accepted");
        let text = stderr(&out);
        // 1.6 and 1.7 add the code (`: invalid argument`); 2.1's `ctr` prints the message
        // only (the code is checked in the shim's unit tests).
        assert!(text.contains(why), "{uri}: {text}");
        let _ = cd.ctr_output(&["container", "rm", "bad"]);
    }
    assert!(cd.tasks().is_empty(), "{:?}", cd.tasks());
    cd.wait_shims_gone();
    let left: Vec<_> = fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the quitter: {left:?}");
    // The shim runs as root: a relative path never became a file somewhere.
    assert!(!Path::new("/relative").exists());
}

/// A terminal task whose output goes to a logger, as `nerdctl run -d -t` asks (Debian's
/// `ctr` sends FIFOs whenever `-t` is given, so this goes through containerd's task API):
/// the terminal's output reaches the logger's fd 3.
#[test]
fn a_terminal_task_logs_through_a_binary_logger() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("tty.log");
    let uri = format!(
        "binary://{}?path={}",
        logger_binary().display(),
        log.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let api = shim_demo::api::Containerd::connect(&cd.address, cd.namespace())
            .await
            .expect("connect");
        let image = cd.import_image();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": { "com.example.sample.process": "spec" },
            "process": { "terminal": true, "args": ["sh", "-c", "echo hello; tty"],
                         "cwd": "/", "user": { "uid": 0, "gid": 0 },
                         "env": ["PATH=/usr/bin:/bin"] },
            "root": { "path": "rootfs" },
        })
        .to_string();
        api.create_container_with_spec("ttylog", image, integration::RUNTIME, &spec)
            .await
            .expect("container");
        api.create_task_with_io("ttylog", "", &uri, &uri)
            .await
            .expect("create with a binary:// logger and a terminal");
        api.start_task("ttylog").await.expect("start");
        let code = api.wait("ttylog").await.expect("wait");
        assert_eq!(code, 0);
        api.delete_task("ttylog").await.expect("delete");
        api.delete_container("ttylog").await.expect("remove");
    });
    let text = fs::read_to_string(&log).expect("the log");
    // (A terminal may end lines with CR LF: the logger would keep the CR in the text.)
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].ends_with(" stdout F hello"), "{text}");
    assert!(lines[1].contains(" stdout F /dev/pts/"), "{text}");
    cd.wait_shims_gone();
}
