//! `make conformance` (`scripts/conformance.sh`), its second half: containerd's own test
//! suites, built with containerd 2.3.4 (`scripts/containerd-2.3.sh`), against our shim and
//! against containerd's runc-v2, on that containerd:
//!
//! - **the CRI suite** (`integration/`, `cri-integration.test`) for the handlers `runc`
//!   (containerd's runc-v2), `sample-oci` (ours in the OCI mode) and `sample-runc-v2` (ours
//!   standing in for runc-v2, `runtime_path`), each in a private containerd with the CRI
//!   plugin and a pod network. The suite restarts its daemon with `pkill -x <name>`: the
//!   daemon runs as `ctrd-cri-suite` (a link to containerd), a name nothing else has, and
//!   is started again here whenever it exited. Tests run one at a time, each with a time
//!   limit; [`CRI_EXCLUDED`] are not run, each for its reason. The suite's failpoint tests use
//!   the handler `runc-fp` (containerd's runc shim with failpoints, whatever
//!   `--runtime-handler` says), configured as containerd's CI does.
//! - **the client suite** (`integration/client`, `client-integration.test`: the task API in
//!   depth) twice: with containerd's runc-v2, and with our binary installed as
//!   `containerd-shim-runc-v2` (the drop-in), first on the daemon's `PATH`. It starts its own
//!   daemon (`containerd` from `PATH`) on `/var/lib/containerd-test` and
//!   `/run/containerd-test`, so the two runs are one after the other.
//!
//! Both suites pull their images by their upstream names (`ghcr.io/containerd/busybox:1.36`,
//! ...); no registry is reachable, so a registry on `127.0.0.1` ([`integration::registry`])
//! serves stand-ins made here ([`integration::image::suite_images`]): as the mirror of
//! `ghcr.io` and `registry.k8s.io` for the CRI suite's daemon (whose sandbox image is the
//! suite's pause, pulled), and behind impersonated upstreams for the client suite, which
//! pulls from the client side ([`Upstreams`]).
//!
//! Usage: `containerd-suites --bin DIR [--out DIR] [--suites cri,client] [--handlers a,b]
//! [--run REGEX]`, `DIR` holding containerd 2.3.4 and the suites. Writes
//! `OUT/RESULTS.md` and each test's log, prints the tables, and fails when ours fails a test
//! containerd's runc-v2 passes.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use integration::{
    image,
    outcomes::{self, Outcome, Run},
    proc,
    registry::Registry,
    Containerd, DROP_IN_HANDLER, OCI_HANDLER, RUNC_V2_BINARY,
};

/// The CRI suite's tests not run, each with its reason: they test containerd itself in ways
/// these machines cannot give (the network, a daemon of their own), and none of them runs
/// a container through `--runtime-handler`.
const CRI_EXCLUDED: &[(&str, &str)] = &[
    (
        "TestContainerdImage",
        "pulls from ghcr.io client-side, past any mirror: the network",
    ),
    (
        "TestContainerdSandboxImagePulledOutsideCRI",
        "pulls from registry.k8s.io client-side, past any mirror: the network",
    ),
    (
        "TestContainerdImageInOtherNamespaces",
        "pulls from ghcr.io client-side, past any mirror: the network",
    ),
    ("TestImageLoad", "pulls and saves its image with docker"),
    (
        "TestSandboxRemoveWithoutIPLeakage",
        "reads CNI host-local's default /var/lib/cni, a machine path the private network \
         does not use",
    ),
    (
        "TestUpgrade",
        "fetches containerd's earlier releases from GitHub: the network",
    ),
    (
        "TestCRIImagePullTimeout",
        "an in-process containerd pulling from the network",
    ),
    (
        "TestOOMEventMonitor",
        "a containerd of its own, from `--build-dir`",
    ),
    (
        "TestReload100Pods",
        "a containerd of its own, with its default handler",
    ),
    (
        "TestRunContainerWithVolatileOption",
        "a containerd of its own, with its default handler",
    ),
    (
        "TestIssue10244LoopbackV2",
        "a containerd of its own, with its default handler",
    ),
    (
        "TestIssue10467",
        "containerd 1.7 and a containerd of its own, with its default handler",
    ),
    (
        "TestRuntimeHandlerUnpackWithSnapshotLabels",
        "a containerd of its own, with handlers of its own (EROFS)",
    ),
];

/// The CRI suite's sandbox image (its default `Pause`), pulled through the registry.
const CRI_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10.2";

/// The client suite's tests not run, each with its reason (`-test.skip`).
const CLIENT_EXCLUDED: &[(&str, &str)] = &[(
    "TestBindLowPortNonOpt",
    "waits forever whatever the shim: its container's pid 1 is busybox's `nc -l`, which \
     has no SIGTERM handler in Debian's busybox-static, so ignores the test's SIGTERM \
     (upstream's image exits 143)",
)];

/// Tests ours fails where containerd's runc-v2 passes, known and not yet fixed: they run, the
/// report lists them, and they do not fail the run (each one that passes again is said).
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// Where the client suite's daemon keeps its state (its sockets, the shims' addresses).
const CLIENT_STATE: &str = "/run/containerd-test";

/// The name the CRI suite's daemon runs under (a link to containerd that
/// `scripts/containerd-2.3.sh` makes): what the suite's `pkill -x` and `pidof` look for.
const CRI_DAEMON_NAME: &str = "ctrd-cri-suite";

/// How long one CRI test may take (its own `-test.timeout`), and how long past it before it
/// is killed.
const CRI_TEST_LIMIT: Duration = Duration::from_secs(240);

/// How long the whole client suite may take.
const CLIENT_SUITE_LIMIT: Duration = Duration::from_secs(600);

fn main() -> Result<()> {
    let arg = |flag: &str| std::env::args().skip_while(|a| a != flag).nth(1);
    let bin = PathBuf::from(arg("--bin").context("--bin DIR (scripts/containerd-2.3.sh)")?);
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/containerd-suites".into()));
    let list = |flag: &str| arg(flag).map(|l| l.split(',').map(str::to_string).collect());
    let suites: Option<Vec<String>> = list("--suites");
    let handlers: Option<Vec<String>> = list("--handlers");
    let filter = arg("--run");
    let wanted = |list: &Option<Vec<String>>, name: &str| {
        list.as_ref().is_none_or(|l| l.iter().any(|x| x == name))
    };
    fs::create_dir_all(&out)?;
    let registry = Registry::serve(image::suite_images()?)?;
    let mut report = String::new();
    let mut problems = Vec::new();
    if wanted(&suites, "cri") {
        let mut runs = Vec::new();
        for (handler, label) in [
            ("runc", "containerd's runc-v2"),
            (OCI_HANDLER, "ours, the OCI mode"),
            (DROP_IN_HANDLER, "ours as runc-v2 (`runtime_path`)"),
        ] {
            if wanted(&handlers, handler) {
                eprintln!("== containerd's CRI suite, handler {handler}");
                let mut run = cri_suite(&bin, &out, handler, &registry, filter.as_deref())?;
                run.label = label.to_string();
                runs.push(run);
            }
        }
        report += &format!(
            "# containerd's CRI suite (`integration/`, 2.3.4) against containerd 2.3.4\n\n{}\n\
             ## Every test that ran\n\n{}\n",
            outcomes::counts(&runs),
            outcomes::every_test(&runs)
        );
        problems.extend(outcomes::regressions(
            &runs,
            "runc",
            &[OCI_HANDLER, DROP_IN_HANDLER],
        ));
    }
    if wanted(&suites, "client") {
        let mut runs = Vec::new();
        for (name, ours) in [("runc-v2", false), (DROP_IN_HANDLER, true)] {
            if wanted(&handlers, name) {
                eprintln!("== containerd's client suite, {name}");
                runs.push(client_suite(
                    &bin,
                    &out,
                    name,
                    ours,
                    &registry,
                    filter.as_deref(),
                )?);
            }
        }
        report += &format!(
            "# containerd's client suite (`integration/client`, 2.3.4) against containerd \
             2.3.4\n\n{}\n## Every test that ran\n\n{}",
            outcomes::counts(&runs),
            outcomes::every_test(&runs)
        );
        problems.extend(outcomes::regressions(&runs, "runc-v2", &[DROP_IN_HANDLER]));
    }
    report += &known_gaps(&mut problems);
    fs::write(out.join("RESULTS.md"), &report)?;
    print!("{report}");
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

/// Takes the [`KNOWN_GAPS`] out of `problems`, and says what became of each (Markdown).
fn known_gaps(problems: &mut Vec<String>) -> String {
    let mut md = String::from("\n## Known gaps\n\n");
    if KNOWN_GAPS.is_empty() {
        md += "None: every test runc-v2 passes here, ours passes.\n";
    }
    for (test, reason) in KNOWN_GAPS {
        let before = problems.len();
        problems.retain(|p| !p.ends_with(&format!(": {test}")));
        let what = if problems.len() < before {
            "fails (known)"
        } else {
            "did not fail: no longer a gap?"
        };
        eprintln!("   known gap {test}: {what}: {reason}");
        md += &format!("- `{test}` {what}: {reason}\n");
    }
    md
}

/// Runs the CRI suite's tests (those matching `filter`, if given) one at a time against
/// `handler`, in a daemon of its own.
fn cri_suite(
    bin: &Path,
    out: &Path,
    handler: &str,
    registry: &Registry,
    filter: Option<&str>,
) -> Result<Run> {
    // The harness starts the daemon `CONTAINERD_BIN` names; each CRI run is the process's
    // only daemon at a time, started from this thread.
    std::env::set_var("CONTAINERD_BIN", bin.join(CRI_DAEMON_NAME));
    std::env::set_var("CTR_BIN", bin.join("ctr"));
    std::env::set_var(integration::SANDBOX_IMAGE_VAR, CRI_SANDBOX_IMAGE);
    let mut cd = Containerd::start_cri_with_cni()
        .context("containerd's CRI suite needs root, containerd and the shim")?;
    for upstream in ["ghcr.io", "registry.k8s.io"] {
        registry.mirror(&cd.registry_config_path(), upstream)?;
    }
    let suite = bin.join("cri-integration.test");
    let endpoint = format!("unix://{}", cd.address.display());
    let logs = out.join(format!("cri-{handler}"));
    fs::create_dir_all(&logs)?;
    let work = tempfile::tempdir()?;
    let common = |command: &mut Command| {
        command
            .args(["--cri-endpoint", &endpoint, "--runtime-handler", handler])
            .args(["--containerd-bin", CRI_DAEMON_NAME])
            .current_dir(work.path());
    };
    let mut listing = Command::new(&suite);
    common(&mut listing);
    let listed = listing
        .args(["-test.list", filter.unwrap_or(".")])
        .output()
        .context("list the CRI suite's tests")?;
    let tests: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with("Test"))
        .map(str::to_string)
        .collect();
    if tests.is_empty() {
        bail!(
            "the CRI suite lists no tests: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
    let started = Instant::now();
    let mut outcomes = BTreeMap::new();
    for test in tests {
        if let Some((_, reason)) = CRI_EXCLUDED.iter().find(|(name, _)| *name == test) {
            eprintln!("   {test}: excluded ({reason})");
            outcomes.insert(test, Outcome::Skipped);
            continue;
        }
        let log = logs.join(format!("{test}.log"));
        let file = fs::File::create(&log)?;
        let mut command = Command::new(&suite);
        common(&mut command);
        command
            .args(["-test.run", &format!("^{test}$"), "-test.v"])
            .arg(format!("-test.timeout={}s", CRI_TEST_LIMIT.as_secs()))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let test_started = Instant::now();
        let outcome = run_restarting(&mut cd, command, CRI_TEST_LIMIT + Duration::from_secs(30))
            .and_then(|finished| {
                let text = fs::read_to_string(&log)?;
                // A test that did not finish, or said nothing of its end, failed.
                let said = go_outcomes(&text).get(&test).copied();
                Ok(said.filter(|_| finished).unwrap_or(Outcome::Failed))
            })?;
        eprintln!(
            "   {test}: {outcome:?} ({:.0} s)",
            test_started.elapsed().as_secs_f64()
        );
        outcomes.insert(test, outcome);
    }
    Ok(Run {
        name: handler.to_string(),
        label: String::new(),
        outcomes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs `command` to its end, starting `cd`'s daemon again whenever it exited (the CRI
/// suite's restarts): a second after the exit is seen, so that the test sees the daemon
/// gone first (it polls `pidof` every second). Kills the command, by pid, after `limit`.
/// Says whether the command finished in time.
fn run_restarting(cd: &mut Containerd, mut command: Command, limit: Duration) -> Result<bool> {
    let mut child = command.spawn().context("run the suite")?;
    let deadline = Instant::now() + limit;
    let mut gone_since: Option<Instant> = None;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            cd.restart_if_exited();
            return Ok(false);
        }
        match gone_since {
            None if !cd.daemon_running() => gone_since = Some(Instant::now()),
            Some(since) if since.elapsed() > Duration::from_millis(1500) => {
                cd.restart_if_exited();
                gone_since = None;
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(100));
    }
    cd.restart_if_exited();
    Ok(true)
}

/// Each top-level test's outcome in a Go test binary's `-test.v` output (a subtest's counts
/// as its parent's).
fn go_outcomes(text: &str) -> BTreeMap<String, Outcome> {
    let mut outcomes = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        for (word, outcome) in [
            ("--- PASS: ", Outcome::Passed),
            ("--- FAIL: ", Outcome::Failed),
            ("--- SKIP: ", Outcome::Skipped),
        ] {
            if let Some(rest) = line.strip_prefix(word) {
                let test = rest.split_whitespace().next().unwrap_or_default();
                if !test.contains('/') {
                    outcomes.insert(test.to_string(), outcome);
                }
            }
        }
    }
    outcomes
}

/// Runs the client suite (the tests matching `filter`, if given) with containerd 2.3.4 and
/// its runc-v2, or ours as runc-v2 when `ours`.
fn client_suite(
    bin: &Path,
    out: &Path,
    name: &str,
    ours: bool,
    registry: &Registry,
    filter: Option<&str>,
) -> Result<Run> {
    let work = tempfile::tempdir()?;
    let upstreams = Upstreams::start(registry, work.path())?;
    let shims = work.path().join("bin");
    fs::create_dir(&shims)?;
    if ours {
        // A copy, not a link: a test copies the shim it finds through os.TempDir (set
        // below to this run's directory), and nothing should ever write through to the
        // build's binary.
        fs::copy(integration::shim_binary()?, shims.join(RUNC_V2_BINARY))?;
    }
    // Its checkpoint tests run where CRIU works (the suite looks for `criu` on its PATH,
    // and the daemon it starts, runc under the shims, inherit it).
    let criu = integration::criu_dir();
    let path = [
        Some(shims.display().to_string()),
        criu.as_ref().map(|dir| dir.display().to_string()),
        Some(bin.display().to_string()),
        std::env::var("PATH").ok(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(":");
    let log = out.join(format!("client-{name}.log"));
    let file = fs::File::create(&log)?;
    let skip: Vec<String> = CLIENT_EXCLUDED
        .iter()
        .map(|(test, _)| format!("^{test}$"))
        .collect();
    let mut command = upstreams.command(&bin.join("client-integration.test"));
    command
        .args(["-test.root", "-test.v", "-test.skip", &skip.join("|")])
        .args(criu.is_none().then_some("-no-criu"))
        .arg(format!("-test.timeout={}s", CLIENT_SUITE_LIMIT.as_secs()))
        .args(filter.map(|f| ["-test.run", f]).into_iter().flatten())
        .env("PATH", path)
        .env("TMPDIR", work.path())
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let started = Instant::now();
    remove_client_containers();
    let status = command.status().context("run the client suite");
    // A suite that timed out leaves its daemon, its shims and their containers.
    stop_client_daemon();
    remove_client_containers();
    let status = status?;
    let mut text = String::new();
    fs::File::open(&log)?.read_to_string(&mut text)?;
    let mut outcomes = go_outcomes(&text);
    for (test, reason) in CLIENT_EXCLUDED {
        eprintln!("   {test}: excluded ({reason})");
        outcomes.insert(test.to_string(), Outcome::Skipped);
    }
    if outcomes.len() == CLIENT_EXCLUDED.len() {
        bail!(
            "the client suite ({status}) ran no test: see {}",
            log.display()
        );
    }
    Ok(Run {
        name: name.to_string(),
        label: if ours {
            "ours installed as containerd-shim-runc-v2".into()
        } else {
            "containerd's runc-v2".into()
        },
        outcomes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Kills, by pid, what the client suite's daemon left running when the suite did not stop
/// it (a time limit): the shims of its state directory with their processes, then the
/// daemon.
fn stop_client_daemon() {
    let address = format!("{CLIENT_STATE}/containerd.sock");
    let ours = |pid: i32, flag: &str| {
        let cmdline = proc::cmdline(pid);
        cmdline.windows(2).any(|w| w[0] == flag && w[1] == address)
            || cmdline
                .windows(2)
                .any(|w| w[0] == flag && w[1] == CLIENT_STATE)
    };
    let shims: Vec<i32> = proc::all_pids()
        .into_iter()
        .filter(|&pid| ours(pid, "-address"))
        .collect();
    let daemons: Vec<i32> = proc::all_pids()
        .into_iter()
        .filter(|&pid| ours(pid, "--state"))
        .collect();
    for shim in shims {
        for pid in proc::descendants(shim).into_iter().chain([shim]) {
            // SAFETY: a plain system call on a pid just identified.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for daemon in daemons {
        eprintln!("   the client suite's daemon {daemon} was left running: stopped");
        // SAFETY: a plain system call on a pid just identified.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
    }
}

/// Removes, with runc, what a client suite's run left in runc's state for its namespaces
/// (`testing`, `testing-<test>`): a test that failed half-way leaves its container, and
/// the next run's container of the same name would exist already. runc-v2 keeps it under
/// `/run/containerd/runc/<namespace>`, ours in the OCI mode under
/// `/run/containerd/sample-oci/<binary>/<namespace>`.
fn remove_client_containers() {
    // Ours keeps each runtime's state apart (`runc`, and `runc-fp` for the failpoint tests).
    let ours = fs::read_dir("/run/containerd/sample-oci")
        .into_iter()
        .flatten()
        .flatten()
        .map(|binary| binary.path());
    for root in std::iter::once(PathBuf::from("/run/containerd/runc")).chain(ours) {
        let Ok(namespaces) = fs::read_dir(&root) else {
            continue;
        };
        for namespace in namespaces.flatten() {
            if !namespace
                .file_name()
                .to_string_lossy()
                .starts_with("testing")
            {
                continue;
            }
            for container in fs::read_dir(namespace.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(namespace.path())
                    .args(["delete", "--force"])
                    .arg(container.file_name())
                    .output();
            }
        }
    }
}

/// The upstream registries, impersonated for one command: the client suite pulls by the
/// images' upstream names from the client side, where no mirror applies (its
/// `--image-list` is read after its names are set). So the command runs in a mount
/// namespace of its own whose `/etc/hosts` sends `ghcr.io` and `registry.k8s.io` to
/// [`UPSTREAM_ADDRESS`], where `socat` terminates TLS (a certificate for those names from a
/// CA made here, the only one the command trusts: `SSL_CERT_FILE`) in front of the
/// registry. Nothing of the machine changes; `socat` is stopped, by pid, when this goes.
struct Upstreams {
    /// `socat`.
    _tls: integration::ChildGuard,
    /// The `/etc/hosts` the command sees.
    hosts: PathBuf,
    /// The CA the command trusts.
    ca: PathBuf,
}

/// Where the impersonated registries answer (a loopback address nothing else uses).
const UPSTREAM_ADDRESS: &str = "127.1.2.3";

impl Upstreams {
    fn start(registry: &Registry, dir: &Path) -> Result<Upstreams> {
        let openssl = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("run openssl (apt-get install -y openssl)")?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let names = "DNS:ghcr.io,DNS:registry.k8s.io";
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=containerd-suites CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=ghcr.io",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        fs::write(dir.join("server.ext"), format!("subjectAltName={names}\n"))?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ])?;
        let hosts = dir.join("hosts");
        fs::write(
            &hosts,
            format!(
                "127.0.0.1 localhost\n::1 localhost\n{UPSTREAM_ADDRESS} ghcr.io registry.k8s.io\n"
            ),
        )?;
        let listen = format!(
            "OPENSSL-LISTEN:443,bind={UPSTREAM_ADDRESS},reuseaddr,fork,verify=0,cert={},key={}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let tls = Command::new("socat")
            .arg(listen)
            .arg(format!("TCP:{}", registry.host))
            .stdin(Stdio::null())
            .stderr(fs::File::create(dir.join("socat.log"))?)
            .spawn()
            .context("run socat (apt-get install -y socat)")?;
        let tls = integration::ChildGuard(tls);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((UPSTREAM_ADDRESS, 443)).is_err() {
            if Instant::now() > deadline {
                bail!("socat does not listen on {UPSTREAM_ADDRESS}:443");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Upstreams {
            _tls: tls,
            hosts,
            ca: dir.join("ca.pem"),
        })
    }

    /// `program` run in a mount namespace of its own, with the hosts file and the CA.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(&self.hosts)
            .arg(program)
            .env("SSL_CERT_FILE", &self.ca);
        command
    }
}
