//! The OCI process model: real containers, made by an OCI runtime binary (runc, crun).
//!
//! What containerd's runc-v2 shim does, behind the same seam as the host model
//! (`model/mod.rs`), for a container whose runtime options name a `binary_name`
//! (`model/options.rs`):
//!
//! - **Create** mounts the `rootfs` mounts of the request (an overlay, usually) at the
//!   bundle's `rootfs`, then runs `RUNTIME create --bundle B --pid-file P ID`. The runtime
//!   makes the namespaces, the cgroup, the mounts and the init process, which waits inside
//!   the container, made but not started; when the runtime exits, the init is re-parented
//!   to the shim (the child subreaper) and reaped by the shim's reaper like any child.
//! - **Start** runs `RUNTIME start ID`: the init runs its program.
//! - **Exec** only records the process; **Start** of it runs `RUNTIME exec --detach
//!   --process JSON --pid-file P ID`, which runs it at once (an OCI runtime has no way to
//!   hold an exec). Its pid exists from then on.
//! - A **terminal** is made by the runtime inside the container: the shim listens on a
//!   *console socket* (`--console-socket`) and the runtime sends the pty's master over it
//!   (`SCM_RIGHTS`); the shim copies it to the FIFOs as it does its own.
//! - **Kill** of one process goes through its pidfd, as in the host model; `--all` and
//!   **Pause**/**Resume** and **Update** through the runtime (`kill --all`, `pause`,
//!   `resume`, `update --resources`). **Pids**, **Stats** and OOM events read the cgroup
//!   the runtime made, with the shim's own cgroup reader (`cgroup/mod.rs`).
//! - **Delete** runs `RUNTIME delete --force ID` and unmounts the root filesystem; so does
//!   `containerd-shim-sample-v2 delete` after a shim crash, from what `oci.json` in the
//!   bundle says.
//!
//! The runtime's own error (its `--log`) is what containerd shows (`model/oci/runtime.rs`).

pub mod runtime;

use std::{
    io::{self, IoSliceMut},
    mem::MaybeUninit,
    os::{fd::OwnedFd, unix::net::UnixListener},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use async_trait::async_trait;
use containerd_shim_protos::{
    api::CreateTaskRequest, shim::oci::CheckpointOptions, types::mount::Mount,
};
use log::{info, warn};
use oci_spec::runtime::{LinuxResources, Spec};

use crate::task::bundle::INIT_PID_FILE;
use crate::{
    cgroup::{self, Cgroup, Hierarchy},
    error::{Error, Result},
    model::ending::{end_all, ProcessTree},
    model::host::members::Registry,
    model::oci::runtime::Runtime,
    model::options::OciConfig,
    model::{self, Instance, Made, Member, NewProcess},
    stdio::{ChildStdio, PtyMaker},
    sys::procfs::ProcStat,
    sys::Signal,
    task::exits::Router,
};

/// The file in the bundle that says which runtime made the container, for `delete` after
/// a shim crash.
pub const STATE_FILE: &str = "oci.json";

/// The runtime's log in the bundle, as runc-v2's.
const LOG_FILE: &str = "log.json";

/// How long one mount of the root filesystem may take before `Create` fails.
const MOUNT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The processes of a new OCI-mode container `req.id`, made by the runtime `config` names.
pub fn container(
    req: &CreateTaskRequest,
    spec: &Spec,
    config: &OciConfig,
    router: Arc<Router>,
    registry: Arc<Registry>,
    namespace: &str,
    cgroups: Option<&Hierarchy>,
) -> Result<Box<dyn Instance>> {
    let bundle = PathBuf::from(&req.bundle);
    let root = config.root_for(namespace);
    let mut flags = Vec::new();
    if config.systemd_cgroup {
        flags.push("--systemd-cgroup".to_string());
    }
    if let Some(criu) = &config.criu_path {
        flags.extend(["--criu".to_string(), criu.display().to_string()]);
    }
    let runtime = Runtime::new(&config.binary, &root, flags, &bundle.join(LOG_FILE), router);
    let mut create_flags = Vec::new();
    if config.no_pivot_root {
        create_flags.push("--no-pivot");
    }
    if config.no_new_keyring {
        create_flags.push("--no-new-keyring");
    }
    let cgroup = match (cgroups, cgroup::from_spec(spec)?) {
        (Some(hierarchy), Some((path, _))) => Some(Cgroup {
            hierarchy: hierarchy.clone(),
            path,
        }),
        _ => None,
    };
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // runc-v2's `ShouldKillAllOnExit`: a pid namespace of its own dies with its init.
    let own_pid_namespace = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
            })
        });
    // containerd unpacked the checkpoint there (or took the options' `CriuImagePath`).
    let restore = Some(PathBuf::from(&req.checkpoint))
        .filter(|p| !p.as_os_str().is_empty())
        .map(|image| Restore {
            image,
            work: config.criu_work_path.clone(),
        });
    info!(
        "{}: OCI mode with {} (root {})",
        req.id,
        runtime.binary.display(),
        root.display()
    );
    Ok(Box::new(OciProcesses {
        id: req.id.clone(),
        bundle,
        runtime,
        create_flags,
        io_owner: (config.io_uid, config.io_gid),
        rootfs: req.rootfs.clone(),
        mounted: false,
        terminal,
        cgroup,
        created: false,
        init: None,
        registry,
        restore,
        own_pid_namespace,
    }))
}

/// A checkpoint to restore a container from (runc-v2's `CriuImagePath`, `CriuWorkPath`).
struct Restore {
    /// CRIU's image, as `checkpoint` wrote it.
    image: PathBuf,
    /// Where CRIU works and logs (`restore.log`): the image's directory if not said.
    work: Option<PathBuf>,
}

/// One container's processes, through its OCI runtime.
pub struct OciProcesses {
    /// The container id, the runtime's too.
    id: String,
    /// The bundle: `config.json`, `rootfs`, and the files the runtime and the shim keep.
    bundle: PathBuf,
    /// The runtime binary, its state directory and global flags.
    runtime: Runtime,
    /// What `create` is given besides the bundle (`--no-pivot`, `--no-new-keyring`).
    create_flags: Vec<&'static str>,
    /// The owner of the pipes the container's stdio goes through (runc-v2's `IoUid` and
    /// `IoGid`): a process whose root is an unprivileged user of the host must be able to
    /// reopen them (`/proc/self/fd/1`).
    io_owner: (u32, u32),
    /// The root filesystem's mounts, from `Create`.
    rootfs: Vec<Mount>,
    /// Whether they are mounted at the bundle's `rootfs`.
    mounted: bool,
    /// Whether the init has a terminal.
    terminal: bool,
    /// The cgroup the runtime makes, at the spec's `cgroupsPath`, when the shim can read it.
    cgroup: Option<Cgroup>,
    /// Whether the runtime has the container: from a `create` that succeeded until `delete`.
    /// A `create` that failed left nothing to delete (the runtime cleans up after itself);
    /// and `delete --force` of an id the runtime had from elsewhere would end someone
    /// else's container.
    created: bool,
    /// The init's pid, once created (or restored).
    init: Option<i32>,
    /// The checkpoint to restore the init from, at `Start`, instead of creating it.
    restore: Option<Restore>,
    /// Whether the container has a pid namespace of its own, whose processes the kernel
    /// kills when its init exits.
    own_pid_namespace: bool,
    /// Who runs what among the shim's descendants (`model/host/members.rs`): this
    /// container's processes are registered there, so that a host-mode container of the
    /// same shim never ends them as its strays.
    registry: Arc<Registry>,
}

impl OciProcesses {
    fn rootfs_dir(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// Mounts the root filesystem at the bundle's `rootfs`, in order, each mount on a
    /// thread of its own ([`model::blocking`]): an overlay of very many layers, or a hung
    /// source, stalls this container only.
    async fn mount_rootfs(&mut self) -> Result<()> {
        if self.rootfs.is_empty() {
            return Ok(());
        }
        let target = self.rootfs_dir();
        std::fs::create_dir_all(&target)
            .map_err(Error::io(format!("create {}", target.display())))?;
        for mount in self.rootfs.clone() {
            let what = format!(
                "mount the root filesystem ({} {}) at {}",
                mount.type_,
                mount.source,
                target.display()
            );
            // Unmounted at `release` even if the mount finishes after its deadline.
            self.mounted = true;
            let at = target.clone();
            let context = what.clone();
            model::blocking(&what, MOUNT_DEADLINE, move || {
                containerd_shim::mount::mount_rootfs(
                    Some(mount.type_.as_str()).filter(|t| !t.is_empty()),
                    Some(mount.source.as_str()),
                    &mount.options,
                    &at,
                )
                .map_err(|err| Error::Io {
                    context,
                    source: io::Error::other(err.to_string()),
                })
            })
            .await?;
        }
        Ok(())
    }

    /// The runtime has the container, its init `pid` made (created, or restored at `Start`).
    fn init_made(&mut self, pid: i32) {
        self.created = true;
        self.init = Some(pid);
        // Where the runtime put the init: a relative `cgroupsPath` (the CRI plugin's
        // `<parent>/<id>` with an empty or relative parent) is relative to the runtime's own
        // cgroup in each v1 hierarchy, which may differ between hierarchies; only the
        // process itself tells.
        if let Some(cgroup) = self.cgroup.as_mut() {
            if let Some(found) = cgroup_of(pid, &cgroup.hierarchy) {
                *cgroup = found;
            }
        }
    }

    /// Who makes this container's processes, for as long as it takes.
    fn maker(&self) -> Maker {
        Maker {
            id: self.id.clone(),
            runtime: self.runtime.clone(),
            io_owner: self.io_owner,
            registry: self.registry.clone(),
        }
    }

    fn state_file(&self) -> PathBuf {
        self.bundle.join(STATE_FILE)
    }
}

/// A checkpoint or a restore that failed: `err` with CRIU's last errors from its log
/// `criu_log`, which is kept in the bundle as `kept` (`criu-dump.log`, runc-v2's name, or
/// `criu-restore.log`) and named in the message.
fn criu_failed(err: Error, criu_log: &Path, bundle: &Path, kept: &str) -> Error {
    let kept = bundle.join(kept);
    let Ok(log) = std::fs::read_to_string(criu_log) else {
        return err;
    };
    let _ = std::fs::write(&kept, &log);
    let reasons: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Error (") || l.contains("Err ("))
        .map(|l| l.trim())
        .collect();
    let said = reasons[reasons.len().saturating_sub(3)..].join("; ");
    let message = format!("{err}; CRIU: {said} (its log: {})", kept.display());
    match err {
        Error::DeadlineExceeded(_) => Error::DeadlineExceeded(message),
        _ => Error::FailedPrecondition(message),
    }
}

/// What makes a container's processes (the runtime's `create` and `exec`), owned: an exec
/// made at `Start` takes it along, out of the container's lock.
#[derive(Clone)]
struct Maker {
    /// The container id.
    id: String,
    /// The runtime that makes them.
    runtime: Runtime,
    /// Who gets the stdio pipes (`IoUid`, `IoGid`).
    io_owner: (u32, u32),
    /// Where they are registered as this container's.
    registry: Arc<Registry>,
}

impl Maker {
    /// Runs a command that makes a process (`create`, `exec`): with a console socket for a
    /// terminal, and the pid file; returns the process.
    async fn make(
        &self,
        args: &[&str],
        pid_file: &Path,
        stdio: ChildStdio,
        terminal: bool,
    ) -> Result<NewProcess> {
        let (uid, gid) = self.io_owner;
        if (uid, gid) != (0, 0) {
            for end in [&stdio.stdin, &stdio.stdout, &stdio.stderr]
                .into_iter()
                .flatten()
            {
                nix::unistd::fchown(end, Some(uid.into()), Some(gid.into())).map_err(
                    Error::sys(format!(
                        "give the stdio pipes to {uid}:{gid} (IoUid, IoGid)"
                    )),
                )?;
            }
        }
        let console = if terminal {
            Some(ConsoleSocket::new()?)
        } else {
            None
        };
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push("--pid-file".into());
        all.push(pid_file.display().to_string());
        if let Some(console) = &console {
            all.push("--console-socket".into());
            all.push(console.path.display().to_string());
        }
        all.push(self.id.clone());
        self.runtime.run(&all, Some(stdio)).await?;
        let master = console.map(|c| c.receive()).transpose()?;
        let text = std::fs::read_to_string(pid_file).map_err(Error::io(format!(
            "read the pid file {}",
            pid_file.display()
        )))?;
        let pid: i32 = text.trim().parse().map_err(|_| Error::Io {
            context: format!("the pid file {}", pid_file.display()),
            source: io::Error::other(format!("{text:?} is not a pid")),
        })?;
        // runc before 1.2 hands over a pid only (no `--pidfd-socket`): the container takes
        // the pidfd as it routes the pid, within the window it opened before this call,
        // which also finds the exit of a process gone already (an exec of `true`).
        Ok(NewProcess {
            pid,
            pidfd: None,
            terminal: master,
        })
    }

    /// Registers process `pid` as this container's, leading its group or session if it
    /// does (runc's init leads a session of its own).
    fn register(&self, pid: i32, init: bool) {
        let leads = ProcStat::read(pid).is_ok_and(|p| p.pgid == pid || p.sid == pid);
        self.registry.spawned(&self.id, pid, leads, init);
    }
}

#[async_trait]
impl Instance for OciProcesses {
    fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    fn init_terminal(&self) -> bool {
        self.terminal
    }

    fn pty_maker(&self) -> PtyMaker {
        PtyMaker::Model
    }

    async fn create(&mut self, stdio: ChildStdio) -> Result<Made> {
        // Which runtime has the container, for `delete` after a shim crash.
        let state = serde_json::json!({
            "binary": self.runtime.binary,
            "root": self.runtime.root,
            "flags": self.runtime.flags,
            "id": self.id,
        });
        std::fs::write(self.state_file(), state.to_string())
            .map_err(Error::io(format!("write {}", self.state_file().display())))?;
        self.mount_rootfs().await?;
        let bundle = self.bundle.display().to_string();
        // Kept until `release`: `delete` after a shim crash reports the init's pid from it.
        let pid_file = self.bundle.join(INIT_PID_FILE);
        let maker = self.maker();
        if let Some(restore) = &self.restore {
            // As runc-v2: nothing runs until `Start`, which restores the init.
            let mut args: Vec<String> = ["restore", "--detach", "--no-subreaper", "--bundle"]
                .map(String::from)
                .into();
            args.push(bundle);
            args.push("--image-path".into());
            args.push(restore.image.display().to_string());
            if let Some(work) = &restore.work {
                args.push("--work-path".into());
                args.push(work.display().to_string());
            }
            if self.create_flags.contains(&"--no-pivot") {
                args.push("--no-pivot".into());
            }
            let terminal = self.terminal;
            let restore_log = restore
                .work
                .as_ref()
                .unwrap_or(&restore.image)
                .join("restore.log");
            let bundle = self.bundle.clone();
            return Ok(Made::AtStart(Box::pin(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let spawned = maker
                    .make(&args, &pid_file, stdio, terminal)
                    .await
                    .map_err(|err| criu_failed(err, &restore_log, &bundle, "criu-restore.log"))?;
                maker.register(spawned.pid, true);
                info!(
                    "{}: restored from its checkpoint, init pid {}",
                    maker.id, spawned.pid
                );
                Ok(spawned)
            })));
        }
        let mut args = vec!["create", "--bundle", &bundle];
        args.extend(&self.create_flags);
        let spawned = maker.make(&args, &pid_file, stdio, self.terminal).await?;
        maker.register(spawned.pid, true);
        self.init_made(spawned.pid);
        info!(
            "{}: {} created the container, init pid {}",
            self.id,
            self.runtime.name(),
            spawned.pid
        );
        Ok(Made::Held(spawned))
    }

    fn started(&mut self, member: &Member, pid: i32) {
        if *member == Member::Init {
            self.init_made(pid);
        }
    }

    async fn checkpoint(&mut self, path: &Path, options: &CheckpointOptions) -> Result<()> {
        // runc-v2's: the options' work path, kept; or one of ours, removed after.
        let (work, ours) = match options.work_path.as_str() {
            "" => (self.bundle.join("criu-work"), true),
            said => (PathBuf::from(said), false),
        };
        for dir in [path, &work] {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        let mut args: Vec<String> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            path.display().to_string(),
            "--work-path".into(),
            work.display().to_string(),
        ];
        let flags = [
            (!options.exit, "--leave-running"),
            (options.open_tcp, "--tcp-established"),
            (options.external_unix_sockets, "--ext-unix-sk"),
            (options.terminal, "--shell-job"),
            (options.file_locks, "--file-locks"),
        ];
        args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| f.to_string()),
        );
        if !options.cgroups_mode.is_empty() {
            args.push("--manage-cgroups-mode".into());
            args.push(options.cgroups_mode.clone());
        }
        for namespace in &options.empty_namespaces {
            args.push("--empty-ns".into());
            args.push(namespace.clone());
        }
        args.push(self.id.clone());
        let ran = self.runtime.run(&args, None).await;
        let result = match ran {
            Ok(_) => {
                info!("{}: checkpointed into {}", self.id, path.display());
                Ok(())
            }
            // CRIU's own reason is in its log, which goes with our work directory: kept in
            // the bundle as `criu-dump.log`, as runc-v2 does.
            Err(err) => Err(criu_failed(
                err,
                &work.join("dump.log"),
                &self.bundle,
                "criu-dump.log",
            )),
        };
        if ours {
            let _ = std::fs::remove_dir_all(&work);
        }
        result
    }

    fn check_exec(&self, _: &oci_spec::runtime::Process) -> Result<()> {
        // The command is looked up inside the container, by the runtime, at `Start`.
        Ok(())
    }

    async fn exec(
        &mut self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: ChildStdio,
    ) -> Result<Made> {
        let maker = self.maker();
        let spec_file = self.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        let json = serde_json::to_vec(process)
            .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
        let terminal = process.terminal().unwrap_or(false);
        let exec_id = exec_id.to_string();
        Ok(Made::AtStart(Box::pin(async move {
            std::fs::write(&spec_file, json)
                .map_err(Error::io(format!("write {}", spec_file.display())))?;
            let spec_path = spec_file.display().to_string();
            let made = maker
                .make(
                    &["exec", "--detach", "--process", &spec_path],
                    &pid_file,
                    stdio,
                    terminal,
                )
                .await;
            let _ = std::fs::remove_file(&spec_file);
            let _ = std::fs::remove_file(&pid_file);
            let spawned = made?;
            maker.register(spawned.pid, false);
            info!("{}: exec {exec_id:?} runs as pid {}", maker.id, spawned.pid);
            Ok(spawned)
        })))
    }

    async fn start(&mut self, member: &Member, pid: i32) -> Result<()> {
        match member {
            Member::Init => self
                .runtime
                .run(&["start", &self.id], None)
                .await
                .map(|_| ()),
            // Never held: made at `Start` (`Made::AtStart`).
            Member::Exec(exec_id) => Err(Error::FailedPrecondition(format!(
                "exec {exec_id:?} (pid {pid}) is not held by the runtime"
            ))),
        }
    }

    fn cancel(&mut self, _: &Member, _: i32) {
        // Nothing is held: an exec not started was never made.
    }

    async fn signal_all(&mut self, signal: Signal) -> Result<()> {
        let number = signal.number().to_string();
        self.runtime
            .run(&["kill", "--all", &self.id, &number], None)
            .await
            .map(|_| ())
    }

    async fn list(&mut self) -> Result<Vec<ProcStat>> {
        if let Some(cgroup) = &self.cgroup {
            return cgroup
                .quick()
                .map_err(Error::io("list the container's processes"));
        }
        let out = self
            .runtime
            .output(&["ps", "--format", "json", &self.id])
            .await?;
        let pids: Vec<i32> = serde_json::from_slice(&out).map_err(|e| Error::Io {
            context: format!("{} ps", self.runtime.name()),
            source: io::Error::other(e),
        })?;
        Ok(pids
            .into_iter()
            .filter_map(|p| ProcStat::read(p).ok())
            .collect())
    }

    async fn set_paused(&mut self, paused: bool) -> Result<()> {
        let verb = if paused { "pause" } else { "resume" };
        self.runtime.run(&[verb, &self.id], None).await.map(|_| ())
    }

    async fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let file = self.bundle.join("resources.json");
        let json = serde_json::to_vec(resources)
            .map_err(|e| Error::InvalidArgument(format!("resources: {e}")))?;
        std::fs::write(&file, json).map_err(Error::io(format!("write {}", file.display())))?;
        let path = file.display().to_string();
        let updated = self
            .runtime
            .run(&["update", "--resources", &path, &self.id], None)
            .await;
        let _ = std::fs::remove_file(&file);
        updated.map(|_| ())
    }

    fn exit_recorded(&mut self, pid: i32) {
        self.registry.exited(&self.id, pid, self.init == Some(pid));
    }

    async fn init_exited(&mut self) {
        // In a pid namespace of its own, the kernel killed the rest with the init, and its
        // cgroup may hold another container's processes (a restore from a checkpoint has
        // its original's `cgroupsPath`): nothing to end, as runc-v2. Sharing one (the
        // host's, a pod's), the rest is still running: everything in the cgroup is ended,
        // or, with no cgroup to read, the runtime ends what it knows of.
        if self.own_pid_namespace {
            return;
        }
        match &self.cgroup {
            Some(cgroup) => {
                end_all(cgroup).await;
            }
            None => {
                let kill = ["kill", "--all", &self.id, "9"];
                let _ = self.runtime.run(&kill, None).await;
            }
        }
    }

    async fn release(&mut self) {
        if self.created {
            if let Err(err) = self
                .runtime
                .run(&["delete", "--force", &self.id], None)
                .await
            {
                warn!("{}: {err}", self.id);
            }
            self.created = false;
        }
        if self.mounted {
            unmount(&self.rootfs_dir());
            self.mounted = false;
        }
        // Kept, saying all is done: containerd runs `delete` in the bundle after the shim
        // exits, even after a clean `Delete`, and without it that would take the bundle for
        // the host mode's, and end whatever runs in the spec's cgroup (a container restored
        // from this one's checkpoint runs in the same).
        let _ = std::fs::write(self.state_file(), r#"{"released":true}"#);
        let _ = std::fs::remove_file(self.bundle.join(INIT_PID_FILE));
        self.registry.forget(&self.id);
    }
}

/// The cgroup process `pid` is in, from `/proc/<pid>/cgroup`, as a [`Cgroup`] whose
/// "hierarchy" is the process's own directory in each controller (so that its path is `/`):
/// on cgroup v1 a process's paths may differ from one controller to the next.
fn cgroup_of(pid: i32, hierarchy: &Hierarchy) -> Option<Cgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let lines: Vec<(&str, &str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect();
    let below = |root: &Path, path: &str| root.join(path.trim_start_matches('/'));
    let own = match hierarchy {
        Hierarchy::V1(mounts) => {
            let mut dirs = std::collections::BTreeMap::new();
            for (controller, mount) in mounts {
                let (_, _, path) = lines.iter().find(|(id, names, _)| {
                    if controller == crate::cgroup::UNIFIED {
                        *id == "0" && names.is_empty()
                    } else {
                        names.split(',').any(|n| n == controller)
                    }
                })?;
                dirs.insert(controller.clone(), below(mount, path));
            }
            Hierarchy::V1(dirs)
        }
        Hierarchy::V2(mount) => {
            let (_, _, path) = lines
                .iter()
                .find(|(id, names, _)| *id == "0" && names.is_empty())?;
            Hierarchy::V2(below(mount, path))
        }
    };
    Some(Cgroup {
        hierarchy: own,
        path: PathBuf::from("/"),
    })
}

/// Unmounts everything at and below `dir`.
fn unmount(dir: &Path) {
    let target = dir.display().to_string();
    if let Err(err) = containerd_shim::mount::umount_recursive(Some(&target), libc::MNT_DETACH) {
        warn!("unmount {target}: {err}");
    }
}

/// `containerd-shim-sample-v2 delete` of a container the OCI mode made: the runtime's
/// `delete --force` (which kills what is left and removes the cgroup), then the root
/// filesystem unmounted. `None` if the bundle holds no OCI-mode container.
pub async fn clean_up_after_crash(bundle: &Path, router: Arc<Router>) -> Option<i32> {
    let text = std::fs::read(bundle.join(STATE_FILE)).ok()?;
    let pid = std::fs::read_to_string(bundle.join(INIT_PID_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let state: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    if state["released"].as_bool() == Some(true) {
        // The shim released everything before it exited.
        let _ = std::fs::remove_file(bundle.join(STATE_FILE));
        return Some(pid);
    }
    match (
        state["binary"].as_str(),
        state["root"].as_str(),
        state["id"].as_str(),
    ) {
        (Some(binary), Some(root), Some(id)) => {
            let log = bundle.join(LOG_FILE);
            let flags = state["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            let runtime = Runtime::new(Path::new(binary), Path::new(root), flags, &log, router);
            if let Err(err) = runtime.run(&["delete", "--force", id], None).await {
                info!("{id}: {err}");
            }
        }
        _ => warn!(
            "{} is not what the shim wrote",
            bundle.join(STATE_FILE).display()
        ),
    }
    unmount(&bundle.join("rootfs"));
    let _ = std::fs::remove_file(bundle.join(STATE_FILE));
    let _ = std::fs::remove_file(bundle.join(INIT_PID_FILE));
    Some(pid)
}

/// A console socket: where the runtime sends the master side of the terminal it made.
/// The socket file goes once the master is received, or the socket dropped.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new() -> Result<ConsoleSocket> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        // A short path (a socket's is limited to 107 bytes), private to this shim.
        let path = std::env::temp_dir().join(format!(
            "sample-shim-pty-{}-{}.sock",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(Error::io(format!(
            "listen on console socket {}",
            path.display()
        )))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The master the runtime sent: it has, by the time its command returned.
    fn receive(self) -> Result<OwnedFd> {
        let failed = |e: io::Error| Error::Io {
            context: format!("receive the terminal on {}", self.path.display()),
            source: e,
        };
        self.listener.set_nonblocking(true).map_err(failed)?;
        let (stream, _) = self.listener.accept().map_err(failed)?;
        stream.set_nonblocking(true).map_err(failed)?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let mut name = [0u8; 256];
        rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut name)],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| failed(e.into()))?;
        for message in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = message {
                if let Some(fd) = fds.next() {
                    return Ok(fd);
                }
            }
        }
        Err(failed(io::Error::other(
            "the runtime sent no file descriptor",
        )))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
