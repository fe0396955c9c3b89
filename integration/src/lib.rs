//! # Integration harness
//!
//! Every test gets a **private containerd**: its own root, state, sockets and config under a
//! temporary directory, with the freshly built `containerd-shim-sample-v2` on its `PATH`, as
//! containerd's own Go integration tests do. Tests then drive it with real clients (Debian's
//! `ctr`), never a mock.
//!
//! - [`Containerd::start`] starts the daemon and waits until it answers;
//!   [`Containerd::start_cri`] one with the CRI plugin, our shim as the runtime handler
//!   `sample` (the Kubernetes tests);
//! - [`Containerd::import_image`] makes a tiny OCI image offline (no registry is reachable:
//!   the shim ignores images anyway, but `ctr container create` wants one);
//! - dropping the [`Containerd`] guard stops everything it started, by pid: the shims it
//!   spawned and their processes, then the daemon. When the test failed (the thread is
//!   panicking) it prints the daemon's log, where the shims' own log lines also land.
//!
//! Needs root and containerd. Without them it fails with a message saying how to get them;
//! `SAMPLE_SHIM_SKIP_INTEGRATION=1` skips instead, loudly.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub mod cgroupfs;
pub mod image;
pub mod outcomes;
pub mod pod;
pub mod proc;
pub mod registry;
pub mod soak;
pub mod timing;

/// The runtime name the shim answers to.
pub const RUNTIME: &str = "com.example.sample.v2";

/// The name of the shim binary, as containerd derives it from [`RUNTIME`].
pub const SHIM_BINARY: &str = "containerd-shim-sample-v2";

/// containerd's runc shim's binary name, which our shim answers to as a drop-in.
pub const RUNC_V2_BINARY: &str = "containerd-shim-runc-v2";

/// The annotation that makes the shim run the spec's own process (spec mode).
pub const SPEC_MODE: &str = "com.example.sample.process=spec";

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Set to `1` to skip the integration tests where root or containerd are missing.
pub const SKIP_VAR: &str = "SAMPLE_SHIM_SKIP_INTEGRATION";

/// A private containerd, stopped with everything it started when dropped.
pub struct Containerd {
    /// Root of everything this daemon owns; removed on drop.
    dir: tempfile::TempDir,
    /// The daemon process (our child).
    daemon: Child,
    /// The containerd binary, for restarts.
    binary: PathBuf,
    /// Its gRPC socket, what `ctr -a` takes.
    pub address: PathBuf,
    /// The shim binary under test.
    pub shim: PathBuf,
    /// The `ctr` binary.
    ctr: PathBuf,
    /// Set once the test image is imported: tests ask for it from many threads at once.
    image: std::sync::OnceLock<()>,
    /// Set once the busybox image (the OCI mode's tests) is imported.
    busybox: std::sync::OnceLock<()>,
    /// The namespace `ctr` works in: one per daemon, because `ctr` names a task's cgroup
    /// `/<namespace>/<id>` and the cgroups are the machine's, shared by every daemon of a
    /// parallel test run.
    namespace: String,
    /// The pod network's bridge and subnet, when the daemon has CNI ([`Containerd::start_cri_with_cni`]):
    /// removed, with their iptables rules, on drop.
    cni: Option<(String, String)>,
    /// What the daemon's environment has besides ours (for restarts).
    env: Vec<(String, String)>,
}

/// The CRI handler (containerd 1.7 and later) for our shim standing in for runc-v2: runtime
/// type `io.containerd.runc.v2`, our binary as its `runtime_path`, runc's options.
pub const DROP_IN_HANDLER: &str = "sample-runc-v2";

/// A CRI handler of our runtime type with runc-v2's options table (`BinaryName`,
/// `SystemdCgroup`), as an operator switching from runc writes it.
pub const RUNC_TABLE_HANDLER: &str = "sample-runc-table";

/// Names the CRI daemons' sandbox image, when set (default [`image::PAUSE`], imported).
pub const SANDBOX_IMAGE_VAR: &str = "SAMPLE_SHIM_SANDBOX_IMAGE";

/// containerd's runc shim with failpoints (built with containerd 2.3.4, beside it), the
/// runtime of the CRI handler `runc-fp` its CRI suite uses.
const SHIM_FAILPOINT_BINARY: &str = "containerd-shim-runc-fp-v1";

/// containerd's CNI `bridge` with failpoints, the network of the handler `runc-fp`.
const CNI_FAILPOINT_PLUGIN: &str = "cni-bridge-fp";

/// The CRI handler for our shim in the OCI mode (with runc), beside
/// [`shim_demo::cri::HANDLER`] (the host mode) and `runc` (containerd's runc-v2 shim).
pub const OCI_HANDLER: &str = "sample-oci";

impl Containerd {
    /// Starts a private containerd, or returns `None` when the developer asked to skip.
    /// Panics with instructions when root or containerd are missing.
    pub fn start() -> Option<Containerd> {
        Self::start_with(false)
    }

    /// Starts a private containerd with the CRI plugin: the runtime handler
    /// [`shim_demo::cri::HANDLER`] is our shim, the test image is imported into the CRI's
    /// namespace with busybox and the pause image (the sandbox image), pods use the host
    /// network (no CNI).
    pub fn start_cri() -> Option<Containerd> {
        let containerd = Self::start_with(true)?;
        containerd.import_cri_images();
        Some(containerd)
    }

    /// [`Containerd::start_cri`] with a pod network: CNI's `bridge` (with `portmap`) on a
    /// bridge and a /24 of this daemon's own, from Debian's `containernetworking-plugins`.
    /// Pods' addresses exist only in the network namespaces of the pods; nothing is routed
    /// elsewhere (no masquerading).
    pub fn start_cri_with_cni() -> Option<Containerd> {
        let mut containerd = Self::start_with(true)?;
        if let Err(err) = containerd.set_up_cni() {
            panic!("{err:#} (apt-get install -y containernetworking-plugins iptables)");
        }
        containerd.import_cri_images();
        Some(containerd)
    }

    /// [`Containerd::start_cri`] with `env` added to the daemon's environment; a `PATH`
    /// there goes before the machine's (CRIU's, for the CRI's checkpoints).
    pub fn start_cri_with_env(env: &[(&str, &str)]) -> Option<Containerd> {
        let containerd = Self::start_with_options(true, false, env)?;
        containerd.import_cri_images();
        Some(containerd)
    }

    /// The images a CRI daemon needs, in the CRI's namespace: the tiny image (the host
    /// mode's containers), busybox (the OCI mode's), and the pause image (every sandbox).
    fn import_cri_images(&self) {
        let namespace = shim_demo::cri::NAMESPACE;
        self.import_image_into(namespace);
        for (name, write) in [
            (
                image::BUSYBOX,
                image::write_busybox_archive as fn(&Path, &str) -> Result<()>,
            ),
            (image::PAUSE, image::write_pause_archive),
        ] {
            let archive = self
                .dir
                .path()
                .join(format!("{}.tar", name.replace(['/', ':'], "_")));
            write(&archive, name).expect("write an image archive");
            let archive = archive.display().to_string();
            self.ctr_ok(&["--namespace", namespace, "images", "import", &archive]);
        }
    }

    /// Writes the CNI configuration the CRI plugin reads (it watches its directory).
    fn set_up_cni(&mut self) -> Result<()> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n =
            (std::process::id() + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % 250;
        let (bridge, subnet) = (format!("shimtest{n}"), format!("10.199.{n}.0/24"));
        let root = self.dir.path();
        let plugins = Path::new("/usr/lib/cni");
        if !plugins.join("bridge").exists() {
            bail!("no CNI plugins in {}", plugins.display());
        }
        fs::create_dir_all(root.join("cni/conf"))?;
        fs::create_dir_all(root.join("cni/bin"))?;
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            std::os::unix::fs::symlink(plugins.join(plugin), root.join("cni/bin").join(plugin))?;
        }
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": subnet }]],
                        "dataDir": root.join("cni/ipam"),
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
            ],
        });
        fs::write(root.join("cni/conf/10-shimtest.conflist"), conf.to_string())?;
        // containerd's CNI bridge with failpoints, where its build has it: the same network
        // for the handler `runc-fp`, the pod's annotations passed to the plugin.
        let failpoint = self.binary.with_file_name(CNI_FAILPOINT_PLUGIN);
        if failpoint.exists() {
            std::os::unix::fs::symlink(
                &failpoint,
                root.join("cni/bin").join(CNI_FAILPOINT_PLUGIN),
            )?;
            let mut conf = conf;
            conf["plugins"][0]["type"] = CNI_FAILPOINT_PLUGIN.into();
            conf["plugins"][0]["capabilities"] =
                serde_json::json!({ "io.kubernetes.cri.pod-annotations": true });
            fs::create_dir_all(root.join("cni/failpoint"))?;
            fs::write(
                root.join("cni/failpoint/10-failpoint.conflist"),
                conf.to_string(),
            )?;
        }
        self.cni = Some((bridge, subnet));
        Ok(())
    }

    /// Removes the pod network: its bridge, the iptables rules that name it or its subnet
    /// (`portmap`'s per-pod chains go with each pod), and `portmap`'s shared chains once no
    /// pod of any network uses them.
    fn tear_down_cni(&self) {
        let Some((bridge, subnet)) = &self.cni else {
            return;
        };
        let _ = Command::new("ip").args(["link", "del", bridge]).output();
        let rules = |table: &str, chain: Option<&str>| -> Vec<Vec<String>> {
            let mut command = Command::new("iptables");
            command.args(["-t", table, "-S"]).args(chain);
            let out = command.output().map(|o| o.stdout).unwrap_or_default();
            String::from_utf8_lossy(&out)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .map(shell_words)
                .collect()
        };
        let shared_unused = rules("nat", Some("CNI-HOSTPORT-DNAT")).is_empty();
        for table in ["nat", "filter"] {
            for rule in rules(table, None) {
                let text = rule.join(" ");
                let ours = text.contains(bridge.as_str()) || text.contains(subnet.as_str());
                let shared = shared_unused
                    && table == "nat"
                    && ["PREROUTING", "OUTPUT", "POSTROUTING"].contains(&rule[1].as_str())
                    && text.contains("CNI-HOSTPORT-");
                if ours || shared {
                    let _ = Command::new("iptables")
                        .args(["-t", table, "-D"])
                        .args(&rule[1..])
                        .output();
                }
            }
        }
        if shared_unused {
            for chain in [
                "CNI-HOSTPORT-DNAT",
                "CNI-HOSTPORT-SETMARK",
                "CNI-HOSTPORT-MASQ",
            ] {
                let _ = Command::new("iptables")
                    .args(["-t", "nat", "-F", chain])
                    .output();
                let _ = Command::new("iptables")
                    .args(["-t", "nat", "-X", chain])
                    .output();
            }
        }
    }

    /// [`Containerd::start`] with `env` added to the daemon's environment, which its shims
    /// inherit (the shim's `SAMPLE_SHIM_CGROUPS`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Option<Containerd> {
        Self::start_with_options(false, false, env)
    }

    /// A private containerd whose runc-v2 is our shim: the binary is also on its `PATH` as
    /// `containerd-shim-runc-v2`, what containerd runs for `io.containerd.runc.v2` (1.6
    /// ignores a handler's `runtime_path`: this is its only way). `cri` adds the CRI
    /// plugin, whose `runc` handler is then ours, with the images imported.
    pub fn start_drop_in(cri: bool) -> Option<Containerd> {
        let containerd = Self::start_with_options(cri, true, &[])?;
        if cri {
            containerd.import_cri_images();
        }
        Some(containerd)
    }

    /// [`Containerd::start_drop_in`] (without the CRI plugin) with `env` added to the
    /// daemon's environment; a `PATH` there goes before the machine's.
    pub fn start_drop_in_with_env(env: &[(&str, &str)]) -> Option<Containerd> {
        Self::start_with_options(false, true, env)
    }

    /// [`Containerd::start_drop_in`] with the CRI plugin and a pod network, as
    /// [`Containerd::start_cri_with_cni`]: critest's daemon for our shim as runc-v2.
    pub fn start_drop_in_with_cni() -> Option<Containerd> {
        let mut containerd = Self::start_with_options(true, true, &[])?;
        if let Err(err) = containerd.set_up_cni() {
            panic!("{err:#} (apt-get install -y containernetworking-plugins iptables)");
        }
        containerd.import_cri_images();
        Some(containerd)
    }

    fn start_with(cri: bool) -> Option<Containerd> {
        Self::start_with_options(cri, false, &[])
    }

    fn start_with_options(cri: bool, drop_in: bool, env: &[(&str, &str)]) -> Option<Containerd> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Self::try_start(cri, drop_in, env) {
            Ok(containerd) => Some(containerd),
            Err(err) if std::env::var(SKIP_VAR).as_deref() == Ok("1") => {
                eprintln!("\n!!!!!!!! SKIPPED: {err:#}\n!!!!!!!! ({SKIP_VAR}=1 is set)\n");
                None
            }
            Err(err) => panic!(
                "cannot run the integration tests: {err:#}\n\
                 They need root and containerd (`apt-get install -y containerd`), and the \
                 shim built (`cargo build --workspace`). Set {SKIP_VAR}=1 to skip them."
            ),
        }
    }

    fn try_start(cri: bool, drop_in: bool, env: Vec<(String, String)>) -> Result<Containerd> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("these tests run containerd and must run as root");
        }
        become_subreaper()?;
        keep_inherited_fds_to_ourselves();
        let containerd = find_binary("CONTAINERD_BIN", "containerd")?;
        let ctr = find_binary("CTR_BIN", "ctr")?;
        let shim = shim_binary()?;

        let dir = tempfile::Builder::new().prefix("shim-it-").tempdir()?;
        let root = dir.path();
        // Only our shim in this directory, which goes first on containerd's PATH.
        let bin = root.join("bin");
        fs::create_dir(&bin)?;
        std::os::unix::fs::symlink(&shim, bin.join(SHIM_BINARY))?;
        if drop_in {
            std::os::unix::fs::symlink(&shim, bin.join(RUNC_V2_BINARY))?;
        }
        let address = root.join("containerd.sock");
        let config = if cri {
            cri_config_toml(root, &containerd)?
        } else {
            config_toml(root)
        };
        fs::write(root.join("config.toml"), config)?;
        let daemon = spawn_daemon(&containerd, root, &env)?;
        let containerd = Containerd {
            dir,
            daemon,
            binary: containerd,
            address,
            shim,
            ctr,
            image: std::sync::OnceLock::new(),
            busybox: std::sync::OnceLock::new(),
            namespace: unique_namespace(),
            cni: None,
            env,
        };
        containerd.wait_ready()?;
        containerd.check_version()?;
        Ok(containerd)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(out) = self.ctr().arg("version").output() {
                if out.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer within 30 s:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `ctr` binary in use.
    pub fn ctr_path(&self) -> &Path {
        &self.ctr
    }

    /// The daemon's version, as `ctr version` reports it.
    pub fn server_version(&self) -> String {
        let out = self.ctr_ok(&["version"]);
        out.split("Server:")
            .nth(1)
            .and_then(|server| {
                server
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Version:"))
            })
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    /// With `EXPECT_CONTAINERD_VERSION` set (the CI matrix does), the daemon must be that
    /// version: a matrix run against the wrong binary would prove nothing.
    fn check_version(&self) -> Result<()> {
        if let Ok(expected) = std::env::var("EXPECT_CONTAINERD_VERSION") {
            let actual = self.server_version();
            if !actual.starts_with(&expected) {
                bail!("containerd {actual} answers, but the matrix expects {expected}");
            }
        }
        Ok(())
    }

    /// The namespace `ctr` commands work in unless they name one (`--namespace`): unique
    /// to this daemon.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A `ctr` command aimed at this daemon, in [`Containerd::namespace`].
    pub fn ctr(&self) -> Command {
        let mut command = Command::new(&self.ctr);
        command.arg("--address").arg(&self.address);
        command.env("CONTAINERD_NAMESPACE", &self.namespace);
        // containerd 2.2 and later's `ctr` warns on every command of a cgroup v1 host (these
        // machines): its stderr is the tests' to read.
        command.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1");
        command.stdin(Stdio::null());
        command
    }

    /// A `shim-demo` command aimed at this daemon, in [`Containerd::namespace`].
    pub fn shim_demo(&self) -> Command {
        let mut command = Command::new(demo_binary());
        command
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        command
    }

    /// `ctr args...`, ready to run.
    ///
    /// `ctr run`, `ctr task start` and `ctr task exec` get `--fifo-dir` under this daemon's
    /// directory: `ctr` leaves a task's FIFOs behind unless it waited for the task itself
    /// (detached, failed, or deleted by another command), and they should go with the
    /// daemon, not pile up in the machine's `/run/containerd/fifo`.
    pub fn ctr_with(&self, args: &[&str]) -> Command {
        let subcommand = match args {
            ["run", ..] => 1,
            ["task", "start" | "exec", ..] => 2,
            _ => 0,
        };
        let mut command = self.ctr();
        command.args(&args[..subcommand]);
        if subcommand > 0 {
            command.arg("--fifo-dir").arg(self.dir.path().join("fifo"));
        }
        command.args(&args[subcommand..]);
        command
    }

    /// Runs `ctr args...` and returns its output, whatever its exit code.
    pub fn ctr_output(&self, args: &[&str]) -> Output {
        self.ctr_with(args)
            .output()
            .unwrap_or_else(|e| panic!("run ctr {args:?}: {e}"))
    }

    /// Runs `ctr args...`, asserts it succeeded, returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr_output(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds the test image offline and imports it, once per daemon; returns its name.
    pub fn import_image(&self) -> &'static str {
        self.image.get_or_init(|| {
            let archive = self.dir.path().join("image.tar");
            image::write_oci_archive(&archive, image::IMAGE).expect("write the image archive");
            self.ctr_ok(&["images", "import", &archive.display().to_string()]);
        });
        image::IMAGE
    }

    /// Builds the busybox image (a real root filesystem, for the OCI mode) offline and
    /// imports it, once per daemon; returns its name.
    pub fn import_busybox(&self) -> &'static str {
        self.busybox.get_or_init(|| {
            let archive = self.dir.path().join("busybox.tar");
            image::write_busybox_archive(&archive, image::BUSYBOX).expect("write busybox");
            self.ctr_ok(&["images", "import", &archive.display().to_string()]);
        });
        image::BUSYBOX
    }

    /// Builds the test image and imports it into `namespace` (the CRI plugin's is
    /// `k8s.io`); returns its name.
    pub fn import_image_into(&self, namespace: &str) -> &'static str {
        let archive = self.dir.path().join(format!("image-{namespace}.tar"));
        image::write_oci_archive(&archive, image::IMAGE).expect("write the image archive");
        let archive = archive.display().to_string();
        self.ctr_ok(&["--namespace", namespace, "images", "import", &archive]);
        image::IMAGE
    }

    /// The arguments of `ctr run <mode>` (`-d`, `--rm`, ...) of `args` as task `id`, with our
    /// runtime in spec mode and the test image.
    pub fn run_args<'a>(&self, mode: &'a str, id: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec![
            "run",
            mode,
            "--runtime",
            RUNTIME,
            "--annotation",
            SPEC_MODE,
            self.import_image(),
            id,
        ];
        full.extend_from_slice(args);
        full
    }

    /// `ctr run -d` of `args` in spec mode as task `id`; returns its pid once RUNNING.
    pub fn run_detached(&self, id: &str, args: &[&str]) -> i32 {
        self.ctr_ok(&self.run_args("-d", id, args));
        self.wait_status(id, "RUNNING")
    }

    /// The usual end of a test's task: `ctr task kill --signal <signal>`, wait for STOPPED,
    /// then `ctr task rm` (whatever it prints) and `ctr container rm`.
    pub fn kill_and_remove(&self, id: &str, signal: &str) {
        self.ctr_ok(&["task", "kill", "--signal", signal, id]);
        self.wait_status(id, "STOPPED");
        self.ctr_output(&["task", "rm", id]);
        self.ctr_ok(&["container", "rm", id]);
    }

    /// `ctr run --rm` of `args` in spec mode as task `id`, whatever its exit code.
    pub fn run_rm(&self, id: &str, args: &[&str]) -> Output {
        self.ctr_output(&self.run_args("--rm", id, args))
    }

    /// `ctr task ls` as (task, pid, status) rows.
    pub fn tasks(&self) -> Vec<(String, i32, String)> {
        self.ctr_ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                Some((
                    cols.first()?.to_string(),
                    cols.get(1)?.parse().ok()?,
                    cols.get(2)?.to_string(),
                ))
            })
            .collect()
    }

    /// The status of `task` in `ctr task ls`, if listed.
    pub fn task_status(&self, task: &str) -> Option<(i32, String)> {
        self.tasks()
            .into_iter()
            .find(|(name, _, _)| name == task)
            .map(|(_, pid, status)| (pid, status))
    }

    /// Polls until `task` has `status`; returns its pid.
    pub fn wait_status(&self, task: &str, status: &str) -> i32 {
        let mut last = None;
        for _ in 0..200 {
            last = self.task_status(task);
            if let Some((pid, ref s)) = last {
                if s == status {
                    return pid;
                }
            }
            thread::sleep(Duration::from_millis(25));
        }
        panic!("task {task} never reached {status}; last seen {last:?}");
    }

    /// Pids of the shims this daemon started: processes running our binary whose command
    /// line names this daemon's socket.
    pub fn shim_pids(&self) -> Vec<i32> {
        self.every_shim()
            .into_iter()
            .filter(|&pid| {
                fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == self.shim)
            })
            .collect()
    }

    /// Every shim this daemon started, ours and containerd's runc-v2 (a test's reference):
    /// the processes given its address.
    fn every_shim(&self) -> Vec<i32> {
        let address = self.address.display().to_string();
        proc::all_pids()
            .into_iter()
            .filter(|&pid| {
                proc::cmdline(pid)
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == address)
            })
            .collect()
    }

    /// The single shim of this daemon; panics unless there is exactly one.
    pub fn the_shim(&self) -> i32 {
        let shims = self.shim_pids();
        assert_eq!(shims.len(), 1, "expected one shim, found {shims:?}");
        shims[0]
    }

    /// The daemon's log, shim log lines included.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The temporary directory this daemon lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Spawns `ctr args...` with stdout piped into a line channel (for streaming commands
    /// such as `ctr events` or an attached `ctr task start`).
    pub fn spawn_ctr(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        spawn_lines(self.ctr_with(args))
    }

    /// Stops the daemon with SIGTERM (its shims keep running, as they must).
    pub fn stop_daemon(&mut self) {
        // SAFETY: a plain system call on our own child.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
    }

    /// Starts the daemon again on the same root, state and sockets.
    pub fn start_daemon(&mut self) {
        self.daemon =
            spawn_daemon(&self.binary, self.dir.path(), &self.env).expect("restart containerd");
        self.wait_ready()
            .expect("containerd answers after the restart");
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> i32 {
        self.daemon.id() as i32
    }

    /// Whether the daemon is running (not exited).
    pub fn daemon_running(&mut self) -> bool {
        matches!(self.daemon.try_wait(), Ok(None))
    }

    /// Starts the daemon again if it has exited (a test killed it, as containerd's CRI suite
    /// does to restart it); says whether it did.
    pub fn restart_if_exited(&mut self) -> bool {
        if self.daemon_running() {
            return false;
        }
        self.start_daemon();
        true
    }

    /// Where the daemon's registry configuration lives (`hosts.toml` per registry host;
    /// containerd 2.x's CRI plugin reads it at each pull).
    pub fn registry_config_path(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// Waits until every shim of this daemon has exited; panics after 5 s.
    pub fn wait_shims_gone(&self) {
        for _ in 0..250 {
            if self.shim_pids().is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("shims still running: {:?}", self.shim_pids());
    }

    /// Starts `ctr events` and returns once its subscription is live (`ctr events`
    /// subscribes asynchronously: the harness makes events until one shows up). The
    /// guard stops `ctr events` when dropped; the receiver has its lines.
    pub fn subscribe_events(&self) -> (ChildGuard, mpsc::Receiver<String>) {
        let (child, lines) = self.spawn_ctr(&["events"]);
        let subscribed = (0..50).any(|i| {
            self.ctr_ok(&["namespaces", "create", &format!("events-probe-{i}")]);
            wait_line(&lines, Duration::from_millis(300), |l| {
                l.contains("/namespaces/create")
            })
            .is_some()
        });
        assert!(subscribed, "ctr events never showed an event");
        (ChildGuard(child), lines)
    }

    fn stop_everything(&mut self) {
        // Let containerd finish the `start`/`delete` commands it is running: killed, they
        // would be orphaned to us half-way.
        let daemon = self.daemon.id() as i32;
        let running = matches!(self.daemon.try_wait(), Ok(None));
        let deadline = Instant::now() + Duration::from_secs(5);
        while running
            && Instant::now() < deadline
            && proc::children(daemon).iter().any(|&p| proc::alive(p))
        {
            thread::sleep(Duration::from_millis(10));
        }
        // Shims first (with whatever they still run), by pid, then the daemon: runc-v2's
        // too, which a failed test may leave with its containers.
        let mut killed = Vec::new();
        for shim in self.every_shim() {
            let socket = proc::cmdline(shim)
                .windows(2)
                .find(|w| w[0] == "-socket")
                .map(|w| w[1].trim_start_matches("unix://").to_string());
            for pid in proc::descendants(shim).into_iter().chain([shim]) {
                // SAFETY: a plain system call on a pid we just identified.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed.push(pid);
            }
            if let Some(socket) = socket {
                let _ = fs::remove_file(socket);
            }
        }
        if running {
            // SAFETY: a plain system call on our own, unreaped child.
            unsafe { libc::kill(daemon, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                stopped = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if !stopped {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
            reap_orphans(&killed);
        }
        self.kill_strays();
    }

    /// Kills, by pid, whatever still runs a program from this daemon's directory: a CNI
    /// plugin (containerd's `cni-bridge-fp`, under the CRI suite's failpoints) that the
    /// daemon left behind when it was restarted, orphaned.
    fn kill_strays(&self) {
        let dir = self.dir.path().display().to_string();
        for pid in proc::all_pids() {
            let ours = proc::cmdline(pid)
                .first()
                .is_some_and(|program| program.starts_with(&dir));
            if ours && pid != std::process::id() as i32 {
                // SAFETY: a plain system call on a pid just identified as this daemon's.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Unmounts whatever a daemon stopped half-way left mounted below its directory (the
    /// CRI plugin's shm mounts), deepest first, so the directory can be removed.
    fn unmount_leftovers(&self) {
        let prefix = self.dir.path().display().to_string();
        let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4).map(str::to_string))
            .filter(|point| point.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            if let Ok(path) = std::ffi::CString::new(point) {
                // SAFETY: umount2 on a NUL-terminated path we own.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Makes the test process the child subreaper of everything it starts. A shim daemonizes:
/// once `start` returns, its parent is gone and it is re-parented to the nearest subreaper,
/// else to pid 1. Some sandboxes run a pid 1 that never reaps, so exited shims would stay
/// zombies there; as subreaper the harness collects them itself (see [`reap_orphans`]).
fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Marks the descriptors this process inherited (past stdio) close-on-exec, so that the
/// daemons, their shims and the clients started here do not inherit them: an open pipe
/// of whoever started the tests would show in a shim's descriptors (containerd's CRI suite
/// counts a shim's pipes). Ours are close-on-exec already.
fn keep_inherited_fds_to_ourselves() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on open descriptors.
    unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
}

/// Reaps the processes this guard killed and the shims that exited on their own, once
/// they are our zombie children. Only those: other tests' `Child` handles must keep
/// their own exit statuses.
fn reap_orphans(killed: &[i32]) {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ours: Vec<i32> = proc::children(me)
            .into_iter()
            .filter(|&pid| killed.contains(&pid) || proc::comm(pid) == "containerd-shim")
            .collect();
        let mut waiting = false;
        for pid in ours {
            if proc::stat(pid).is_some_and(|(state, ..)| state == 'Z') {
                // SAFETY: waitpid on a zombie child of ours: returns at once.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            } else if killed.contains(&pid) {
                waiting = true;
            }
        }
        if !waiting || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // One more pass for a shim that was finishing its own exit a moment ago.
    thread::sleep(Duration::from_millis(20));
    for pid in proc::children(me) {
        if proc::comm(pid) == "containerd-shim" && proc::stat(pid).is_some_and(|s| s.0 == 'Z') {
            // SAFETY: waitpid on a zombie child of ours: returns at once.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}

/// A child process (such as `ctr events`) killed and reaped when the guard is dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The namespaces the test used besides its own (`k8s.io` for CRI; containerd 2.x
        // names a pod without a cgroup parent `/k8s.io/<id>`), while the daemon answers.
        let namespaces: Vec<String> = self
            .ctr()
            .args(["namespaces", "ls", "-q"])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .filter(|ns| *ns != self.namespace)
                    .collect()
            })
            .unwrap_or_default();
        self.stop_everything();
        self.unmount_leftovers();
        self.tear_down_cni();
        // The namespace's parent cgroup, which `ctr`'s `/<namespace>/<id>` made and nobody
        // removes (containerd's runc shim leaves it too), and what a failed test left in it
        // (its processes are killed by now). Tests check their own tasks' cgroups are gone.
        for dir in cgroup_dirs(&format!("/{}", self.namespace)) {
            remove_cgroup_tree(&dir);
        }
        // Other namespaces may be another test's too (`k8s.io`): their parent cgroup goes
        // only when empty.
        for namespace in namespaces {
            for dir in cgroup_dirs(&format!("/{namespace}")) {
                let _ = fs::remove_dir(dir);
            }
        }
        if thread::panicking() {
            eprintln!(
                "===== containerd log ({}) =====\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// The words of an `iptables -S` line, a double-quoted comment as one word.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A namespace no other daemon of this machine uses: `test-<pid>-<n>`.
fn unique_namespace() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("test-{}-{n}", std::process::id())
}

/// The directories of cgroup `path` (`/a/b`) that exist, in every hierarchy of the
/// machine: each v1 controller's, and the unified one.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    roots
        .into_iter()
        .map(|root| root.join(relative))
        .filter(|dir| dir.join("cgroup.procs").exists())
        .collect()
}

/// Removes cgroup directory `dir` and those below it, deepest first (`rmdir` is how a
/// cgroup goes; its files cannot be removed).
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Set to 1 to skip the checkpoint tests where CRIU cannot work (`criu check` fails).
pub const SKIP_CRIU_VAR: &str = "SAMPLE_SHIM_SKIP_CRIU";

/// The directory of a `criu` that works here (CRIU 4.2, built once from the vendored source
/// by `scripts/criu.sh` and cached), for the `PATH` of a daemon whose shims checkpoint
/// (runc runs the `criu` on its `PATH`). `None` only when [`SKIP_CRIU_VAR`] is 1 and CRIU
/// cannot be had: said loudly. Otherwise that panics, with what the script said.
pub fn criu_dir() -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    let found = DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/criu.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", script.display()))?;
        let said = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = said.lines().rev().take(5).collect();
        if !out.status.success() {
            return Err(format!(
                "scripts/criu.sh failed ({}): {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match found {
        Ok(dir) => Some(dir.clone()),
        Err(err) if std::env::var(SKIP_CRIU_VAR).as_deref() == Ok("1") => {
            eprintln!(
                "\n!!!!!!!! SKIPPED (checkpoints): {err}\n!!!!!!!! ({SKIP_CRIU_VAR}=1 is set)\n"
            );
            None
        }
        Err(err) => panic!(
            "the checkpoint tests need a CRIU that works here: {err}\n\
             Set {SKIP_CRIU_VAR}=1 to skip them where `criu check` fails."
        ),
    }
}

/// Starts containerd with the config under `root`, our shim first on its `PATH`, then the
/// directory of the containerd binary (so that each version of the matrix runs its own
/// `containerd-shim-runc-v2`), its output appended to `root/containerd.log`.
fn spawn_daemon(containerd: &Path, root: &Path, env: &[(String, String)]) -> Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("containerd.log"))?;
    let own = containerd.parent().unwrap_or(Path::new("/usr/bin"));
    // A `PATH` in `env` comes after our shim's directory, before the rest (CRIU's).
    let extra: Vec<&str> = env
        .iter()
        .filter(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .collect();
    let path = [
        root.join("bin").display().to_string(),
        extra.join(":"),
        own.display().to_string(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect::<Vec<_>>()
    .join(":");
    Command::new(containerd)
        .arg("--config")
        .arg(root.join("config.toml"))
        .env("PATH", path)
        .envs(env.iter().filter(|(k, _)| k != "PATH").map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawn {}", containerd.display()))
}

/// The daemon's configuration: everything under `root`, CRI (which wants CNI) disabled.
fn config_toml(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"version = 2
root = "{r}/root"
state = "{r}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{r}/containerd.sock"

[ttrpc]
  address = "{r}/containerd.sock.ttrpc"

[debug]
  address = "{r}/debug.sock"
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{r}/opt"
"#
    )
}

/// The major and minor version of the containerd binary (`containerd --version`).
pub fn binary_version(containerd: &Path) -> Result<(u32, u32)> {
    let out = Command::new(containerd).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "containerd github.com/containerd/containerd/v2 2.1.9+unknown" or "... 1.6.20~ds1 ..."
    text.split_whitespace()
        .filter_map(|word| {
            let mut parts = word.trim_start_matches('v').split(['.', '~', '+', '-']);
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .next()
        .with_context(|| format!("no version in `containerd --version`: {text}"))
}

/// The daemon's configuration with the CRI plugin: [`config_toml`]'s settings, plus the
/// runtime handlers `sample` for our shim and `sample-oci` for it in the OCI mode (with
/// runc), the pause image as the sandbox image, cgroups,
/// `restrict_oom_score_adj`, no CNI (pods use the host network) and no NRI (its socket is
/// machine-wide). containerd 1.6 and 1.7 read config version 2; 2.x moved the CRI settings
/// to version 3's `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`.
fn cri_config_toml(root: &Path, containerd: &Path) -> Result<String> {
    let r = root.display();
    let (major, minor) = binary_version(containerd)?;
    let common = config_toml(root).replace(
        r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#,
        r#"disabled_plugins = ["io.containerd.nri.v1.nri"]"#,
    );
    // The sandboxes' image: the harness's pause, or the one `SANDBOX_IMAGE_VAR` names (a
    // daemon that pulls it, from a registry of [`registry`]).
    let sandbox = std::env::var(SANDBOX_IMAGE_VAR).unwrap_or_else(|_| image::PAUSE.into());
    let (handler, image, runtime) = (shim_demo::cri::HANDLER, sandbox, RUNTIME);
    // The OCI mode's handler names an options file selecting runc; the host mode's one
    // asking for the host mode (the CRI plugin's containers are refused it otherwise).
    let oci_options = root.join("sample-oci.toml");
    fs::write(&oci_options, "BinaryName = \"runc\"\n")?;
    let host_options = root.join("sample-host.toml");
    fs::write(&host_options, "mode = \"host\"\n")?;
    let (oci, oci_options, host_options) =
        (OCI_HANDLER, oci_options.display(), host_options.display());
    // containerd 1.7 and later honour a handler's `runtime_path`: our binary stands in for
    // runc-v2 under runc-v2's runtime type and options (1.6 starts runc-v2's binary from
    // its PATH whatever the path says: [`Containerd::start_drop_in`] is its way).
    let shim = shim_binary()?;
    let drop_in = |section: &str| {
        if (major, minor) < (1, 7) {
            return String::new();
        }
        format!(
            r#"
[{section}.containerd.runtimes.{DROP_IN_HANDLER}]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = "{}"
  [{section}.containerd.runtimes.{DROP_IN_HANDLER}.options]
    BinaryName = "runc"
    SystemdCgroup = false
"#,
            shim.display()
        )
    };
    // CheckpointContainer's archive, restored by CreateContainer (2.3 and later ask for it).
    let restore = if (major, minor) >= (2, 3) {
        "\n  enable_experimental_restore_via_create = true"
    } else {
        ""
    };
    let cri = if major >= 2 {
        format!(
            r#"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{image}"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{r}/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  disable_cgroup = false
  disable_apparmor = true
  enable_selinux = false
  # The shim applies the spec's oom_score_adj (-998 for a sandbox), and lowering it needs
  # CAP_SYS_RESOURCE: clamp it to containerd's own, as on a machine without that capability.
  restrict_oom_score_adj = true
  # An exec whose background child holds its output: ExecSync gives up waiting for the
  # output's end after this long, deletes the exec, and the shim closes the FIFOs.
  drain_exec_sync_io_timeout = "10s"{restore}

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{handler}]
  runtime_type = "{runtime}"
  pod_annotations = ["com.example.sample.*"]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{handler}.options]
    ConfigPath = "{host_options}"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{oci}]
  runtime_type = "{runtime}"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{oci}.options]
    ConfigPath = "{oci_options}"

# Listing runtimes replaces the default list: runc stays the default, under its usual name,
# with the options table an operator has for it.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
    BinaryName = "runc"
    SystemdCgroup = false

# runc's table on our runtime type: containerd 1.6 drops both keys (the shim must refuse the
# pod rather than run it on the host), 1.7 and later pass them as ConfigBody.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{RUNC_TABLE_HANDLER}]
  runtime_type = "{runtime}"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{RUNC_TABLE_HANDLER}.options]
    BinaryName = "runc"
    SystemdCgroup = false

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dir = "{r}/cni/bin"
  conf_dir = "{r}/cni/conf"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
{}{}"#,
            drop_in(r#"plugins."io.containerd.cri.v1.runtime""#),
            failpoint_handler(root, containerd)
        )
    } else {
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  disable_cgroup = false
  disable_apparmor = true
  enable_selinux = false
  # The shim applies the spec's oom_score_adj (-998 for a sandbox), and lowering it needs
  # CAP_SYS_RESOURCE: clamp it to containerd's own, as on a machine without that capability.
  restrict_oom_score_adj = true
  # An exec whose background child holds its output: ExecSync gives up waiting for the
  # output's end after this long (1.7 and later), deletes the exec, and the shim closes
  # the FIFOs.
  drain_exec_sync_io_timeout = "10s"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
  runtime_type = "{runtime}"
  pod_annotations = ["com.example.sample.*"]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}.options]
    ConfigPath = "{host_options}"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{oci}]
  runtime_type = "{runtime}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{oci}.options]
    ConfigPath = "{oci_options}"

# Listing runtimes replaces the default list: runc stays the default, under its usual name,
# with the options table an operator has for it.
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    BinaryName = "runc"
    SystemdCgroup = false

# runc's table on our runtime type: containerd 1.6 drops both keys (the shim must refuse the
# pod rather than run it on the host), 1.7 and later pass them as ConfigBody.
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC_TABLE_HANDLER}]
  runtime_type = "{runtime}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC_TABLE_HANDLER}.options]
    BinaryName = "runc"
    SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{r}/cni/bin"
  conf_dir = "{r}/cni/conf"
{}"#,
            drop_in(r#"plugins."io.containerd.grpc.v1.cri""#)
        )
    };
    let version = if major >= 2 {
        "version = 3"
    } else {
        "version = 2"
    };
    Ok(common.replacen("version = 2", version, 1) + &cri)
}

/// The CRI handler `runc-fp` of containerd's CRI suite (its failpoint tests), where the
/// containerd binary has its failpoint shim beside it: containerd's runc shim with failpoints
/// taken from the pod's annotations, on the network of [`CNI_FAILPOINT_PLUGIN`]. No options:
/// the CRI plugin gives a runtime type other than runc-v2's its generic options, which
/// that shim does not read.
fn failpoint_handler(root: &Path, containerd: &Path) -> String {
    if !containerd.with_file_name(SHIM_FAILPOINT_BINARY).exists() {
        return String::new();
    }
    let section = r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc-fp"#;
    format!(
        r#"
[{section}]
  runtime_type = "io.containerd.runc-fp.v1"
  pod_annotations = ["io.containerd.runtime.v2.shim.failpoint.*"]
  cni_conf_dir = "{}/cni/failpoint"
  cni_max_conf_num = 1
"#,
        root.display()
    )
}

/// `$var` if set, else `name` looked up on `PATH`.
fn find_binary(var: &str, name: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(var) {
        return Ok(PathBuf::from(path));
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH (install it, or set {var})"))
}

/// The shim under test: `$SHIM_BIN`, or the one cargo built beside this test binary.
pub fn shim_binary() -> Result<PathBuf> {
    built_binary("SHIM_BIN", SHIM_BINARY, "shim")
}

/// The `shim-demo` under test: `$SHIM_DEMO_BIN`, or the one cargo built beside this test.
pub fn demo_binary() -> PathBuf {
    built_binary("SHIM_DEMO_BIN", "shim-demo", "demo-cli").unwrap_or_else(|err| panic!("{err:#}"))
}

/// The example logger (`logger/`, for `binary://` log URIs): `$SAMPLE_LOGGER_BIN`, or the
/// one cargo built beside this test.
pub fn logger_binary() -> PathBuf {
    built_binary("SAMPLE_LOGGER_BIN", "sample-logger", "logger")
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// `$var`, or binary `name` from this test's target directory, provided it is newer than
/// the sources of workspace member `member`: an older one would test stale code.
fn built_binary(var: &str, name: &str, member: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{var}={} is not a file (build it first)", path.display());
        }
        return Ok(path);
    }
    // A test runs from target/<profile>/deps/<test>-<hash>, a binary from target/<profile>/.
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe.parent().context("locate the target directory")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir
            .parent()
            .context("locate the target directory")?;
    }
    let binary = profile_dir.join(name);
    let missing = || {
        format!(
            "{} is missing: run `cargo build --workspace` first",
            binary.display()
        )
    };
    let built = fs::metadata(&binary)
        .and_then(|m| m.modified())
        .with_context(missing)?;
    let sources = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(member)
        .join("src");
    if newest_file(&sources)? > built {
        bail!(
            "{} is older than its sources: run `cargo build --workspace` first",
            binary.display()
        );
    }
    Ok(binary)
}

/// The latest modification time of any file under `dir`.
fn newest_file(dir: &Path) -> Result<std::time::SystemTime> {
    let mut newest = std::time::UNIX_EPOCH;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let modified = if entry.file_type()?.is_dir() {
            newest_file(&entry.path())?
        } else {
            entry.metadata()?.modified()?
        };
        newest = newest.max(modified);
    }
    Ok(newest)
}

/// Spawns `command` with stdout piped into a line channel; [`Containerd::spawn_ctr`] for a
/// `ctr` command that needs more set up than its arguments (see `ctr.rs`, which starts one
/// with SIGINT ignored).
pub fn spawn_lines(mut command: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Calls `check` every 20 ms until it returns `Some`, and returns that value; panics after
/// `timeout`, naming `what` the test was waiting for.
///
/// Tests wait for state this way, never with a fixed sleep: a sleep long enough for a
/// loaded CI machine wastes time everywhere else, and is still a guess.
pub fn poll_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("gave up after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for a line that satisfies `pred`, returning it.
pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Seconds since the epoch of a `date --rfc-3339=seconds` line
/// (`2026-11-29 18:36:30+00:00`), or `None` if the line is not one.
pub fn parse_rfc3339_seconds(line: &str) -> Option<i64> {
    let b = line.as_bytes();
    if b.len() != 25
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| line.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let sign = match b[19] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = sign * (num(20..22)? * 3600 + num(23..25)? * 60);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_lines_parse_to_epoch_seconds() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01 00:00:00+00:00"), Some(0));
        assert_eq!(
            parse_rfc3339_seconds("2026-11-29 18:36:30+00:00"),
            Some(1_795_977_390)
        );
        assert_eq!(
            parse_rfc3339_seconds("2026-11-29 19:36:30+01:00"),
            Some(1_795_977_390)
        );
        assert_eq!(parse_rfc3339_seconds("not a date"), None);
    }
}
