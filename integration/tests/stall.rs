//! One container's slow `Create` must not stall its neighbours in the same shim.
//!
//! Two containers share a shim (`com.example.sample.group`). The second one's `Create`
//! hangs, in one of three ways a model call can: its `binary://` logger never says it is
//! ready (it keeps fd 5 open and never writes to it; the shim waits up to `READY_LIMIT`,
//! 10 s, `shim/src/logs.rs`); its process is born frozen (cgroup v2, a cgroup under a
//! frozen parent: the kernel stops the child before its first instruction, so it never
//! reports; the shim kills it at `BIRTH_DEADLINE`, 5 s, `shim/src/host.rs`); or its OCI
//! runtime's `create` never returns. While it hangs, the first container is none of that
//! business: `ctr task ps` (`Pids`), `ctr task ls` (containerd's `State` of every task) and
//! `ctr task kill` with its `/tasks/exit` event must each be served as fast as when nothing
//! waits (the issue: 100 ms).
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
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    time::{Duration, Instant},
};

use integration::{
    poll_until, proc, stderr,
    timing::{arrival, stamped, timed},
    wait_exit, ChildGuard, Containerd,
};

const GROUP: &str = "com.example.sample.group=g";

/// What a neighbour's call may take beyond its baseline (the figure).
const SLACK: Duration = Duration::from_millis(100);

/// A logger that never gets ready: it keeps fd 5 (the readiness pipe) open and never
/// writes to it.
const HUNG_LOGGER: &str = "#!/bin/sh\nexec sleep 1000\n";

/// An OCI runtime whose `create` never returns (and whose other commands succeed).
const HUNG_RUNTIME: &str =
    "#!/bin/sh\nfor a; do [ \"$a\" = create ] && exec sleep 1000; done\nexit 0\n";

/// The slowest of three runs of `ctr args...`, each of which must succeed.
fn baseline(cd: &Containerd, args: &[&str]) -> Duration {
    (0..3)
        .map(|_| timed(|| cd.ctr_ok(args)).1)
        .max()
        .unwrap_or_default()
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

/// An executable script at `dir/name`.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write the script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `ctr run -d` of `second` in the group, with `extra` flags before the image: it waits
/// for the shim's `Create`, which hangs.
fn run_second(cd: &Containerd, extra: &[&str]) -> ChildGuard {
    let mut args = cd.run_args("-d", "second", &["sleep", "1000"]);
    let mut flags = vec!["--annotation", GROUP];
    flags.extend_from_slice(extra);
    args.splice(2..2, flags);
    ChildGuard(
        cd.ctr_with(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run second"),
    )
}

/// How `ctr run second` ended: (success, stderr), within `limit`.
fn outcome(second: &mut Child, limit: Duration) -> (bool, String) {
    let status = wait_exit(second, limit)
        .unwrap_or_else(|| panic!("ctr run second still waits after {limit:?}"));
    let mut message = String::new();
    if let Some(mut err) = second.stderr.take() {
        let _ = err.read_to_string(&mut message);
    }
    (status.success(), message)
}

/// `first`, in the group's shim, and what the calls take with nothing in the way.
struct Neighbour {
    pid: i32,
    shim: i32,
    events: std::sync::mpsc::Receiver<(Instant, String)>,
    _subscription: ChildGuard,
    ps_baseline: Duration,
    ls_baseline: Duration,
}

impl Neighbour {
    /// `first` in the group, run by `ctr args...` (by default, `ctr run -d` of `sleep`).
    fn start(cd: &Containerd, args: Option<&[&str]>) -> Neighbour {
        let mut default = cd.run_args("-d", "first", &["sleep", "1000"]);
        default.splice(2..2, ["--annotation", GROUP]);
        cd.ctr_ok(args.unwrap_or(&default));
        let pid = cd.wait_status("first", "RUNNING");
        let shim = cd.the_shim();
        let (subscription, lines) = cd.subscribe_events();
        Neighbour {
            pid,
            shim,
            events: stamped(lines),
            _subscription: subscription,
            ps_baseline: baseline(cd, &["task", "ps", "first"]),
            ls_baseline: baseline(cd, &["task", "ls"]),
        }
    }

    /// While `second`'s `Create` hangs (`still_hung` says it does, before and after):
    /// Pids, State of every task, Kill and its exit event, each within its baseline +
    /// [`SLACK`]. `first` is killed by it.
    fn served_during(
        &self,
        cd: &Containerd,
        second: &mut ChildGuard,
        still_hung: impl Fn() -> bool,
    ) {
        assert!(
            matches!(second.0.try_wait(), Ok(None)) && still_hung(),
            "ctr run second ended before the measurements"
        );
        let (ps, ps_took) = timed(|| cd.ctr_output(&["task", "ps", "first"]));
        let (ls, ls_took) = timed(|| cd.ctr_output(&["task", "ls"]));
        let kill_started = Instant::now();
        let kill = cd.ctr_output(&["task", "kill", "-s", "SIGKILL", "first"]);
        let exit_at = arrival(&self.events, Duration::from_secs(15), |l| {
            l.contains("/tasks/exit") && l.contains("\"container_id\":\"first\"")
        });
        let exit_took = exit_at.map(|at| at.duration_since(kill_started));
        let hung_throughout = still_hung() && matches!(second.0.try_wait(), Ok(None));
        let (ps_baseline, ls_baseline) = (self.ps_baseline, self.ls_baseline);
        eprintln!(
            "during the hang: ctr task ps {ps_took:?} (baseline {ps_baseline:?}), \
             ctr task ls {ls_took:?} (baseline {ls_baseline:?}), \
             kill to /tasks/exit {exit_took:?} (budget from the ps baseline); \
             still hung after them: {hung_throughout}"
        );
        assert!(
            ps_took <= ps_baseline + SLACK,
            "ctr task ps first took {ps_took:?} while second hung (baseline {ps_baseline:?})"
        );
        assert!(ps.status.success(), "ctr task ps: {}", text(&ps));
        assert!(
            String::from_utf8_lossy(&ps.stdout).contains(&self.pid.to_string()),
            "ctr task ps first: {}",
            text(&ps)
        );
        assert!(
            ls_took <= ls_baseline + SLACK,
            "ctr task ls took {ls_took:?} while second hung (baseline {ls_baseline:?})"
        );
        // (containerd lists `second` too, during its `Create`: its row is not checked.)
        let row = ["first".to_string(), self.pid.to_string(), "RUNNING".into()];
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
            "second stopped hanging before the measurements ended: they prove nothing"
        );
    }

    /// Removes `first`, and `second` (never created), then waits for the shim to go.
    fn finish(self, cd: &Containerd) {
        assert_eq!(cd.task_status("second"), None, "no task is left");
        cd.ctr_ok(&["container", "rm", "second"]);
        cd.wait_status("first", "STOPPED");
        cd.ctr_output(&["task", "rm", "first"]);
        cd.ctr_ok(&["container", "rm", "first"]);
        cd.wait_shims_gone();
    }
}

/// The OCI mode: a runtime `create` that hangs past the request's deadline (`ctr
/// --timeout`, which containerd passes on to the shim) is killed by the shim itself, and
/// `Create` fails saying so; the neighbour's `Pids` is served meanwhile.
#[test]
fn a_runtime_call_past_its_deadline_is_killed_by_the_shim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = script(dir.path(), "hung-runtime", HUNG_RUNTIME);
    let options = dir.path().join("options.toml");
    fs::write(
        &options,
        format!("BinaryName = \"{}\"\n", runtime.display()),
    )
    .expect("write the options");
    let Some(cd) = Containerd::start() else {
        return;
    };
    let first = Neighbour::start(&cd, None);
    let options = options.display().to_string();
    let mut args = vec!["--timeout", "4s"];
    args.extend(cd.run_args("-d", "second", &["sleep", "1000"]));
    args.splice(
        3..3,
        ["--annotation", GROUP, "--runtime-config-path", &options],
    );
    let mut second = ChildGuard(
        cd.ctr_with(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run second"),
    );
    let hung = poll_until(Duration::from_secs(10), "the hung runtime", || {
        proc::descendants(first.shim).into_iter().find(|&pid| {
            proc::comm(pid) == "sleep"
                && proc::cmdline(pid).iter().any(|a| a == "1000")
                && pid != first.pid
        })
    });
    let (ps, ps_took) = timed(|| cd.ctr_output(&["task", "ps", "first"]));
    eprintln!(
        "while the runtime hangs: ctr task ps first {ps_took:?} (baseline {:?})",
        first.ps_baseline
    );
    assert!(ps.status.success(), "ctr task ps: {}", text(&ps));
    assert!(
        ps_took <= first.ps_baseline + SLACK,
        "ctr task ps first took {ps_took:?} (baseline {:?})",
        first.ps_baseline
    );
    // Nobody but the shim ends the runtime.
    let (ok, message) = outcome(&mut second.0, Duration::from_secs(20));
    assert!(!ok, "ctr run second succeeded: {message}");
    poll_until(
        Duration::from_secs(10),
        "the shim to kill the hung runtime",
        || (!proc::alive(hung)).then_some(()),
    );
    let log = cd.log();
    assert!(
        log.contains("hung-runtime create did not finish within"),
        "the shim says why: {}",
        log.lines()
            .filter(|l| l.contains("second"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The neighbour was never touched.
    assert!(proc::alive(first.pid), "first still runs");
    cd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "first"]);
    cd.ctr_output(&["task", "rm", "second"]);
    first.finish(&cd);
}

#[test]
fn a_logger_that_never_gets_ready_stalls_no_neighbour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logger = script(dir.path(), "hung-logger", HUNG_LOGGER);
    let Some(cd) = Containerd::start() else {
        return;
    };
    let first = Neighbour::start(&cd, None);
    let uri = format!("binary://{}", logger.display());
    let mut second = run_second(&cd, &["--log-uri", &uri]);
    // The logger, once it is the `sleep` that hangs: the shim's child, with the
    // environment a logger gets.
    let hung = poll_until(Duration::from_secs(10), "the hung logger", || {
        proc::descendants(first.shim).into_iter().find(|&pid| {
            proc::comm(pid) == "sleep"
                && proc::environ(pid).contains(&"CONTAINER_ID=second".to_string())
        })
    });
    first.served_during(&cd, &mut second, || proc::alive(hung));

    // The logger gone, second's `Create` fails at once, naming the logger.
    // SAFETY: a plain system call on the shim's unreaped child we just found.
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let (ok, message) = outcome(&mut second.0, Duration::from_secs(5));
    assert!(!ok, "ctr run second succeeded: {message}");
    assert!(
        message.contains(&format!("logger {}", logger.display())),
        "{message}"
    );
    first.finish(&cd);
}

/// A process born frozen (cgroup v2: its cgroup is made under a frozen parent, and
/// `clone3(CLONE_INTO_CGROUP)` puts the child there, stopped before its first instruction)
/// never reports its setup. Its container's `Create` waits for it on the runtime, not on
/// the shim's thread: the neighbour is served meanwhile, and the `Create` fails at the
/// birth deadline with DeadlineExceeded, the child killed, nothing left.
#[test]
fn a_process_frozen_at_birth_stalls_no_neighbour() {
    let Some(cd) = Containerd::start_with_env(&[("SAMPLE_SHIM_CGROUPS", "v2")]) else {
        return;
    };
    let root = integration::cgroupfs::v2_mount().expect(
        "a cgroup2 mount (this test freezes a v2 cgroup; the development VMs have one at \
         /sys/fs/cgroup/unified)",
    );
    let parent = format!("stall-frozen-{}", std::process::id());
    let guard = FrozenParent(root.join(&parent));
    let frozen = &guard.0;
    fs::create_dir_all(frozen).expect("make the parent cgroup");
    fs::write(frozen.join("cgroup.freeze"), "1").expect("freeze it");
    // Specs without limits: a hybrid machine's cgroup2 has no controllers to apply them.
    let config = |id: &str, cgroup: &str| {
        let mut spec: serde_json::Value =
            serde_json::from_str(&cd.ctr_ok(&["oci", "spec"])).expect("ctr oci spec");
        spec["process"]["args"] = serde_json::json!(["sleep", "1000"]);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["annotations"] = serde_json::json!({
            "com.example.sample.process": "spec",
            "com.example.sample.group": "g",
        });
        spec["linux"]["cgroupsPath"] = serde_json::json!(cgroup);
        spec["linux"]["resources"] = serde_json::json!({});
        let file = cd.dir().join(format!("{id}.json"));
        fs::write(&file, spec.to_string()).expect("write the spec");
        file.display().to_string()
    };
    let run = |id: &str, file: &str| {
        [
            "run",
            "-d",
            "--runtime",
            integration::RUNTIME,
            "--config",
            file,
            id,
        ]
        .map(String::from)
        .to_vec()
    };
    let first_config = config("first", &format!("/{}/first", cd.namespace()));
    let first_run = run("first", &first_config);
    let first_run: Vec<&str> = first_run.iter().map(String::as_str).collect();
    let first = Neighbour::start(&cd, Some(&first_run));
    let second_config = config("second", &format!("/{parent}/second"));
    let second_run = run("second", &second_config);
    let mut second = ChildGuard(
        cd.ctr_with(&second_run.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr run second"),
    );
    let procs = frozen.join("second").join("cgroup.procs");
    let child = poll_until(
        Duration::from_secs(10),
        "the child, frozen at birth",
        || {
            fs::read_to_string(&procs)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<i32>()
                .ok()
        },
    );
    first.served_during(&cd, &mut second, || proc::alive(child));

    let (ok, message) = outcome(&mut second.0, Duration::from_secs(15));
    assert!(!ok, "ctr run second succeeded: {message}");
    assert!(message.contains("was not set up within"), "{message}");
    poll_until(Duration::from_secs(5), "the frozen child's end", || {
        (!proc::alive(child)).then_some(())
    });
    first.finish(&cd);
    assert!(
        !frozen.join("second").exists(),
        "the task's cgroup was left"
    );
}

/// A frozen cgroup of a test's own: thawed and removed however the test ends.
struct FrozenParent(PathBuf);

impl Drop for FrozenParent {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("cgroup.freeze"), "0");
        integration::remove_cgroup_tree(&self.0);
    }
}

/// The OCI mode: a runtime whose `create` never returns. The shim awaits the runtime's exit
/// through its reaper, so the neighbour is served meanwhile; once the runtime is gone the
/// `Create` fails, naming it.
#[test]
fn a_runtime_create_that_hangs_stalls_no_neighbour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = script(dir.path(), "hung-runtime", HUNG_RUNTIME);
    let options = dir.path().join("options.toml");
    fs::write(
        &options,
        format!("binary_name = \"{}\"\n", runtime.display()),
    )
    .expect("write the options");
    let Some(cd) = Containerd::start() else {
        return;
    };
    let first = Neighbour::start(&cd, None);
    let options = options.display().to_string();
    let mut second = run_second(&cd, &["--runtime-config-path", &options]);
    let hung = poll_until(Duration::from_secs(10), "the hung runtime", || {
        proc::descendants(first.shim).into_iter().find(|&pid| {
            pid != first.pid
                && proc::comm(pid) == "sleep"
                && proc::cmdline(pid).iter().any(|a| a == "1000")
        })
    });
    first.served_during(&cd, &mut second, || proc::alive(hung));

    // SAFETY: a plain system call on the shim's unreaped child we just found.
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let (ok, message) = outcome(&mut second.0, Duration::from_secs(10));
    assert!(!ok, "ctr run second succeeded: {message}");
    assert!(message.contains("hung-runtime"), "{message}");
    first.finish(&cd);
}
