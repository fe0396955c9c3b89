//! Where shims fail in the field, tried on ours: containerd restarts, a shim killed with
//! SIGKILL, and the hardening a process trusted with other people's processes needs.

use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf, thread, time::Duration};

use integration::{poll_until, proc, stderr, Containerd};

#[test]
fn tasks_survive_a_containerd_restart() {
    let Some(mut cd) = Containerd::start() else {
        return;
    };
    let pid = cd.run_detached("survivor", &["sleep", "1000"]);
    let doomed = cd.run_detached("doomed", &["sh", "-c", "read x; exit 42"]);
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 2);

    let fifo = stdin_fifo(&cd, "doomed");
    cd.stop_daemon();
    // While containerd is down, one task exits with a code of its own (its stdin FIFO is
    // ours to write: the shim holds it open).
    fs::write(&fifo, b"go\n").expect("write to the stdin FIFO");
    for _ in 0..100 {
        if !proc::alive(doomed) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !proc::alive(doomed),
        "the doomed task exited while containerd was down"
    );
    assert!(
        shims.iter().all(|&s| proc::alive(s)),
        "shims outlive containerd"
    );
    cd.start_daemon();

    assert_eq!(cd.task_status("survivor"), Some((pid, "RUNNING".into())));
    // containerd 1.6 lists the exited task as STOPPED with its real exit code until
    // `ctr task rm`. containerd 1.7 and 2.x, when they reload a shim whose task has no
    // process left, delete it themselves (containerd#6860): the shim reports the real code
    // to that Delete, as its log line in containerd's log shows (once the shim's log FIFO
    // has carried it there). Wait until one of the two is true.
    let deleted_line = "doomed: deleted, exit code 42";
    let listed = poll_until(
        Duration::from_secs(10),
        "the task that exited while containerd was down to be listed STOPPED (containerd \
         1.6), or deleted with the shim logging its exit code 42 (1.7, 2.x)",
        || match cd.task_status("doomed") {
            Some((pid, status)) if status == "STOPPED" => Some(Some(pid)),
            None if cd.log().contains(deleted_line) => Some(None),
            _ => None,
        },
    );
    if let Some(pid) = listed {
        assert_eq!(pid, doomed);
        let out = cd.ctr_output(&["task", "rm", "doomed"]);
        assert!(stderr(&out).contains("exit code 42"), "{}", stderr(&out));
    }

    let (_events, lines) = cd.subscribe_events();
    cd.ctr_ok(&["task", "kill", "survivor"]);
    cd.wait_status("survivor", "STOPPED");
    let exit = integration::wait_line(&lines, Duration::from_secs(10), |l| {
        l.contains("/tasks/exit") && l.contains("\"container_id\":\"survivor\"")
    })
    .expect("events reach the restarted containerd");
    assert!(exit.contains("\"exit_status\":143"), "{exit}");
    let out = cd.ctr_output(&["task", "rm", "survivor"]);
    assert!(stderr(&out).contains("exit code 143"), "{}", stderr(&out));
    for id in ["survivor", "doomed"] {
        cd.ctr_ok(&["container", "rm", id]);
    }
    cd.wait_shims_gone();
}

/// The stdin FIFO of task `id`, as containerd recorded it.
fn stdin_fifo(cd: &Containerd, id: &str) -> PathBuf {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let api = shim_demo::api::Containerd::connect(&cd.address, cd.namespace())
            .await
            .expect("connect");
        let task = api.task(id).await.expect("get task").expect("task exists");
        PathBuf::from(task.stdin)
    })
}

#[test]
fn a_shim_killed_with_sigkill_is_cleaned_up_by_delete() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (_events, lines) = cd.subscribe_events();
    let pid = cd.run_detached("crash", &["sleep", "1000"]);
    let shim = cd.the_shim();
    let socket = PathBuf::from(
        fs::read_to_string(cd.dir().join(format!(
            "state/io.containerd.runtime.v2.task/{}/crash/address",
            cd.namespace()
        )))
        .expect("address")
        .trim_start_matches("unix://"),
    );
    // SAFETY: a plain system call on the shim we just identified.
    unsafe { libc::kill(shim, libc::SIGKILL) };

    let exit = integration::wait_line(&lines, Duration::from_secs(15), |l| {
        l.contains("/tasks/exit") && l.contains("\"container_id\":\"crash\"")
    })
    .expect("/tasks/exit after the shim died");
    assert!(exit.contains("\"exit_status\":137"), "{exit}");
    for _ in 0..250 {
        if !proc::alive(pid) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!proc::alive(pid), "`delete` killed the orphaned task");
    assert!(!socket.exists(), "`delete` removed the dead shim's socket");
    let _ = cd.ctr_output(&["task", "rm", "crash"]);
    assert!(
        !cd.dir()
            .join(format!(
                "state/io.containerd.runtime.v2.task/{}/crash",
                cd.namespace()
            ))
            .exists(),
        "the bundle is gone"
    );
    // The same container starts again at once.
    cd.ctr_ok(&["task", "start", "--detach", "crash"]);
    cd.wait_status("crash", "RUNNING");
    cd.kill_and_remove("crash", "SIGKILL");
    cd.wait_shims_gone();
}

#[test]
fn the_shim_is_private_and_the_task_inherits_nothing() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let pid = cd.run_detached("tidy", &["sleep", "1000"]);
    let shim = cd.the_shim();

    // The socket: a file (no abstract socket), owned by root, mode 0600.
    let socket = PathBuf::from(
        fs::read_to_string(cd.dir().join(format!(
            "state/io.containerd.runtime.v2.task/{}/tidy/address",
            cd.namespace()
        )))
        .expect("address")
        .trim_start_matches("unix://"),
    );
    let meta = fs::metadata(&socket).expect("socket file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    let abstract_sockets = fs::read_to_string("/proc/net/unix")
        .expect("/proc/net/unix")
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(7)
                .is_some_and(|p| p.starts_with('@') && p.contains("containerd-shim"))
        })
        .count();
    assert_eq!(abstract_sockets, 0);

    // A non-root user cannot connect.
    let socket_c = std::ffi::CString::new(socket.display().to_string()).expect("path");
    // SAFETY: fork in a test process; the child only calls async-signal-safe functions
    // (setgid, setuid, socket, connect, _exit) on data prepared before the fork.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            let ok = libc::setgid(65534) == 0 && libc::setuid(65534) == 0;
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in socket_c.as_bytes().iter().enumerate() {
                addr.sun_path[i] = *b as libc::c_char;
            }
            let rc = libc::connect(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            );
            libc::_exit(if !ok {
                2
            } else if rc == 0 {
                1
            } else {
                0
            });
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "user nobody could connect to the shim (or setuid failed)"
    );

    // The task holds only 0, 1, 2: every descriptor of the shim is close-on-exec.
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("task fds")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    let described: Vec<String> = fds
        .iter()
        .map(|fd| {
            format!(
                "{fd} -> {:?}",
                fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            )
        })
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "{described:?}");

    // Its environment is the spec's: ctr's default spec sets PATH (and TERM for -t) only.
    let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        vars.iter().all(|v| v.starts_with("PATH=")),
        "unexpected environment {vars:?}"
    );
    assert!(
        !vars.iter().any(|v| v.starts_with("TTRPC_ADDRESS")),
        "{vars:?}"
    );

    // It runs with the default oom_score_adj, not containerd's.
    let oom = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom_score_adj");
    assert_eq!(oom.trim(), "0");
    assert!(proc::alive(shim));
    cd.kill_and_remove("tidy", "SIGTERM");
    cd.wait_shims_gone();
}

#[test]
fn start_outside_a_bundle_leaves_no_daemon_and_no_socket() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let empty = tempfile::tempdir().expect("tempdir");
    let before: Vec<String> = fs::read_dir("/run/containerd/s")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let out = std::process::Command::new(&cd.shim)
        .args(["-namespace", "default", "-id", "nobundle", "-address"])
        .arg(&cd.address)
        .arg("start")
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", cd.address.display()))
        .current_dir(empty.path())
        .output()
        .expect("run the shim's start");
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("config.json"), "{text}");
    let after: Vec<String> = fs::read_dir("/run/containerd/s")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(before.len(), after.len(), "no new socket");
    assert!(cd.shim_pids().is_empty(), "no daemon");

    // Ids on the command line are checked too, before anything is spawned.
    let bundle = tempfile::tempdir().expect("tempdir");
    fs::write(bundle.path().join("config.json"), "{}").expect("config");
    for (flag, bad) in [("-id", "../escape"), ("-id", "a/b"), ("-namespace", "..")] {
        let (id, namespace) = if flag == "-id" {
            (bad, "default")
        } else {
            ("ok", bad)
        };
        let out = std::process::Command::new(&cd.shim)
            .args(["-namespace", namespace, "-id", id, "-address"])
            .arg(&cd.address)
            .arg("start")
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", cd.address.display()))
            .current_dir(bundle.path())
            .output()
            .expect("run the shim's start");
        assert!(!out.status.success(), "{flag} {bad:?} was accepted");
        assert!(
            stderr(&out).contains("invalid"),
            "{flag} {bad:?}: {}",
            stderr(&out)
        );
    }
    assert!(cd.shim_pids().is_empty(), "no daemon");
}
