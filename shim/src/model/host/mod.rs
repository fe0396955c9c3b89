//! The host process model: a container's processes run on the host, as the shim's
//! children, behind the start-gate helper (`model/host/gate.rs`); the default of the two
//! implementations of the seam (`model/mod.rs`), and the tour's.
//!
//! - **Spawning.** Every process is this binary again, as the start-gate helper, with the
//!   spec's environment, working directory and identity; it waits on a pipe (the gate) until
//!   `Start`, then `exec`s the program, keeping its pid. It is cloned straight into the
//!   container's cgroup on v2, and moves itself in on v1 while `Start` comes (`model/host/spawn.rs`);
//!   between the clone and that `exec` the child applies the spec (`ChildSetup`).
//! - **Process groups.** The init leads its own process group (pgid = its pid), so that
//!   `kill --all` reaches the task with one `killpg` and never the shim, and a terminal's
//!   Ctrl-C cannot reach the shim. An exec joins that group ([`Group::Join`]) unless the
//!   init has a terminal: then it leads a session of its own, whose group no process of
//!   another session may join, and its execs lead groups of their own.
//! - **Membership, chosen once at `Create`** ([`Members`]): the container's cgroup when its
//!   spec names one and the shim may write cgroups, else the process tree (`model/host/members.rs`).
//!   Every path that lists, signals as a whole, freezes, measures or ends the container's
//!   processes asks [`ProcessTree::quick`] and [`ProcessTree::exhaustive`], so the two
//!   mechanisms never mix.
//! - **Ending.** [`end_all`] kills what the exhaustive look finds and waits on each
//!   process's pidfd, which polls readable the moment it exits: no sleep loop.

pub mod gate;
pub mod members;
pub mod pause;
pub mod spawn;

use std::{
    collections::HashMap,
    ffi::OsStr,
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use containerd_shim_protos::{api::CreateTaskRequest, shim::oci::CheckpointOptions};
use log::{debug, info, warn};
use nix::{
    fcntl::OFlag,
    sys::resource::Resource,
    unistd::{pipe2, Gid, Uid},
};
use oci_spec::runtime::{LinuxResources, Spec};

use self::spawn::{Birth, Report};
use crate::{
    cgroup::devices,
    cgroup::oom::OomWatch,
    cgroup::resources::{self, Resources},
    cgroup::{self, Cgroup, Hierarchy},
    error::{Error, Result},
    model::host::members::Registry,
    model::{
        ending::{end_all, ProcessTree},
        Instance, Made, Member, NewProcess, ProcessModel,
    },
    stdio::ChildStdio,
    sys::procfs::{self, ProcStat},
    sys::{self, Signal},
    task::bundle,
    task::spec::{self, Kind, ProcessSpec},
};

/// The refusal of a checkpoint or a restore: what cannot be done, and why.
fn no_checkpoints(what: &str) -> Error {
    Error::FailedPrecondition(format!(
        "{what}: it runs host processes (mode = \"host\"), which have no CRIU image to give \
         or take; checkpoints need the OCI mode (mode = \"oci\", runc and CRIU)"
    ))
}

/// Which process group a new process goes into (ignored for a process with a terminal,
/// which leads a session, and so a group, of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A group of its own (the init process; the execs of a terminal task).
    Own,
    /// An existing group in the shim's session (the init's, for exec processes), so that
    /// `kill --all` reaches them with one `killpg`.
    Join(i32),
}

/// The host process model: makes each container's [`HostProcesses`].
pub struct Host {
    /// The start-gate helper every process is spawned as: this binary.
    helper: PathBuf,
    /// The machine's cgroups, when the shim may write them (root, a hierarchy mounted).
    cgroups: Option<Hierarchy>,
    /// Who runs what among the shim's descendants, for containers without a cgroup.
    registry: Arc<Registry>,
}

impl Host {
    /// The host model with `helper` as the start-gate helper (`/proc/self/exe` in the
    /// shim), sharing the shim's `registry`.
    pub fn new(helper: &Path, registry: Arc<Registry>) -> Host {
        Host {
            helper: helper.to_path_buf(),
            cgroups: writable_cgroups(),
            registry,
        }
    }

    /// Who runs what among the shim's descendants: the OCI mode registers its processes
    /// too, so that a host-mode neighbour without a cgroup never takes them for its strays.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}

#[async_trait]
impl ProcessModel for Host {
    async fn container(
        &self,
        req: &CreateTaskRequest,
        spec: &Spec,
        kind: &Kind,
    ) -> Result<Box<dyn Instance>> {
        let (id, bundle) = (&req.id, Path::new(&req.bundle));
        if !req.checkpoint.is_empty() {
            return Err(no_checkpoints(&format!(
                "cannot restore task {id:?} from the checkpoint {:?}",
                req.checkpoint
            )));
        }
        if !req.rootfs.is_empty() {
            debug!(
                "{id}: ignoring {} rootfs mounts: host processes",
                req.rootfs.len()
            );
        }
        let init = spec::init_process(spec, kind, &self.helper)?;
        let members = match (&self.cgroups, cgroup::from_spec(spec)?) {
            (Some(hierarchy), Some((path, resources))) => {
                let cgroup = Cgroup {
                    hierarchy: hierarchy.clone(),
                    path,
                };
                let made = cgroup
                    .create()
                    .map_err(|e| cgroup_error(&cgroup, e))
                    .and_then(|()| {
                        cgroup
                            .apply(&resources)
                            .map_err(|e| limits_error(&cgroup, e))
                    });
                if let Err(err) = made {
                    let _ = cgroup.remove();
                    return Err(err);
                }
                if let Some(what) = resources.unenforced(cgroup.is_v2()) {
                    warn!("{id}: {what}");
                }
                Members::Cgroup(cgroup)
            }
            _ => Members::Tree,
        };
        Ok(Box::new(HostProcesses {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            helper: self.helper.clone(),
            init_spec: init,
            members,
            registry: self.registry.clone(),
            init: None,
            gates: HashMap::new(),
            joining: HashMap::new(),
        }))
    }

    /// The init pid comes from the bundle (`init.pid`) and is trusted only if that pid
    /// still has the recorded start time and leads its own process group; then the whole
    /// group is killed. The spec's cgroup, if any, is emptied and removed: a daemon that
    /// escaped the group and session is still in it.
    async fn clean_up_after_crash(&self, bundle: &Path) -> i32 {
        let mut pid = 0;
        if let Some((recorded, start_time)) = bundle::read_init_pid(bundle) {
            pid = recorded;
            let same_process = ProcStat::read(recorded)
                .is_ok_and(|s| s.start_time == start_time && s.pgid == recorded && s.state != 'Z');
            if same_process {
                // A process group we just verified is the task's.
                let _ = sys::signal_group(recorded, Signal::KILL);
            }
            bundle::remove_init_pid(bundle);
        }
        let Some(hierarchy) = self.cgroups.clone() else {
            return pid;
        };
        let Ok(Some((path, _))) = spec::read_spec(bundle)
            .map_err(|_| ())
            .and_then(|s| cgroup::from_spec(&s).map_err(|_| ()))
        else {
            return pid;
        };
        let cgroup = Cgroup { hierarchy, path };
        let _ = cgroup.set_frozen(false);
        end_all(&cgroup).await;
        if let Err(err) = cgroup.remove() {
            info!("remove cgroup {}: {err}", cgroup.path.display());
        }
        pid
    }
}

/// How a container's processes are found, signalled as a whole and ended: chosen once, at
/// `Create`.
#[derive(Debug)]
pub enum Members {
    /// Its cgroup's: the kernel keeps the list (`cgroup.procs`), strays included.
    Cgroup(Cgroup),
    /// The process tree's: the shim's descendants that the container's process groups,
    /// sessions and ancestry claim (`model/host/members.rs`).
    Tree,
}

/// One container's host processes.
pub struct HostProcesses {
    /// The container id, for the registry and the log.
    id: String,
    /// Its bundle, where `init.pid` is written for `delete` after a crash.
    bundle: PathBuf,
    /// The start-gate helper.
    helper: PathBuf,
    /// What the init runs, from the spec.
    init_spec: ProcessSpec,
    /// How its processes are found.
    members: Members,
    /// What every container of the shim claims (used without a cgroup).
    registry: Arc<Registry>,
    /// The init's pid and pidfd, once created.
    init: Option<(i32, Arc<OwnedFd>)>,
    /// Write ends of the start gates of the processes not started yet, by pid.
    gates: HashMap<i32, OwnedFd>,
    /// Processes still moving into the container's v1 cgroups (`model/host/spawn.rs`), or done, until
    /// `Start` takes the outcome.
    joining: HashMap<i32, Joined>,
}

/// Where a new process is in its move into the container's cgroups.
enum Joined {
    /// Still moving (or `exec`ing the helper); its pidfd, to end it if it never finishes.
    Pending(Report, Arc<OwnedFd>),
    /// Done: in every cgroup and at its gate, or what failed.
    Done(std::result::Result<(), Error>),
}

impl HostProcesses {
    /// `signal` to every process of the container: the init through its pidfd, its
    /// process group, and the container's processes outside that group.
    fn signal_everything(&self, signal: Signal) -> Result<()> {
        let Some((pid, pidfd)) = &self.init else {
            return Err(Error::FailedPrecondition("no init process".into()));
        };
        sys::signal_pidfd(pidfd, signal).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => Error::NotFound(format!("process {pid} already finished")),
            _ => Error::io(format!("signal {} to process {pid}", signal.number()))(e),
        })?;
        // Safe from pid reuse: the group leader is alive (the pidfd signal above succeeded
        // and the shim has not reaped it), so the group id is still its own.
        let _ = sys::signal_group(*pid, signal);
        // Processes outside the init's process group (the execs of a terminal task, a
        // daemon that called setsid) are still the container's. No `.await` since the
        // look: a listed pid is still the one seen.
        for process in self.quick().unwrap_or_default() {
            if process.pgid != *pid && process.state != 'Z' {
                let _ = sys::signal_pid(process.pid, signal);
            }
        }
        Ok(())
    }

    /// Spawns a process at its start gate, in the container's cgroup if it has one (born
    /// there on v2; moving there meanwhile on v1, see `model/host/spawn.rs`); keeps its gate and its
    /// move. On failure nothing is left.
    async fn spawn(
        &mut self,
        process: &ProcessSpec,
        stdio: ChildStdio,
        group: Group,
        name: &str,
    ) -> Result<(NewProcess, Arc<OwnedFd>)> {
        let held = Held {
            helper: &self.helper,
            process,
            group,
            name,
            cgroup: self.cgroup(),
        };
        let (spawned, pidfd, gate, joining) = held.spawn(stdio).await?;
        self.gates.insert(spawned.pid, gate);
        self.joining
            .insert(spawned.pid, Joined::Pending(joining, pidfd.clone()));
        Ok((spawned, pidfd))
    }

    /// Waits until every new process is in the container's cgroups (or failed to get
    /// there): what lists, signals, freezes or ends the container's processes through its
    /// cgroup must not miss one still moving. A move takes a grace period or two; one that
    /// has not finished within [`JOIN_DEADLINE`] (its process stopped by a signal, or its
    /// cgroup frozen from outside) is ended, so that no RPC waits for ever.
    async fn settle(&mut self) {
        for (pid, joined) in self.joining.iter_mut() {
            let Joined::Pending(joining, pidfd) = joined else {
                continue;
            };
            let outcome = match tokio::time::timeout(JOIN_DEADLINE, joining.done()).await {
                Ok(done) => done.map_err(|err| spawn_error(&format!("process {pid}"), None, err)),
                Err(_) => {
                    let _ = sys::signal_pidfd(&**pidfd, Signal::KILL);
                    Err(Error::Unavailable(format!(
                        "process {pid} did not finish joining its cgroup within \
                         {JOIN_DEADLINE:?} (stopped?): killed"
                    )))
                }
            };
            *joined = Joined::Done(outcome);
        }
    }
}

/// How long a new process may take to join the container's cgroups ([`HostProcesses::settle`]).
const JOIN_DEADLINE: Duration = Duration::from_secs(2);

/// How long a new process may take to set itself up before it is killed ([`Held::spawn`]):
/// a `chdir` into a hung mount, or a birth in a cgroup frozen from outside, would otherwise
/// hold its container's `Create` for ever.
const BIRTH_DEADLINE: Duration = Duration::from_secs(5);

/// The container's processes, through the mechanism chosen at `Create`.
impl ProcessTree for HostProcesses {
    fn quick(&self) -> io::Result<Vec<ProcStat>> {
        match &self.members {
            Members::Cgroup(cgroup) => cgroup.quick(),
            Members::Tree => self.registry.selection(&self.id).quick(),
        }
    }

    fn exhaustive(&self) -> io::Result<Vec<ProcStat>> {
        match &self.members {
            Members::Cgroup(cgroup) => cgroup.exhaustive(),
            Members::Tree => self.registry.selection(&self.id).exhaustive(),
        }
    }

    fn kill_at_once(&self) {
        if let Some(cgroup) = self.cgroup() {
            cgroup.kill_at_once();
        }
    }
}

#[async_trait]
impl Instance for HostProcesses {
    fn cgroup(&self) -> Option<&Cgroup> {
        match &self.members {
            Members::Cgroup(cgroup) => Some(cgroup),
            Members::Tree => None,
        }
    }

    fn init_terminal(&self) -> bool {
        self.init_spec.terminal
    }

    async fn create(&mut self, stdio: ChildStdio) -> Result<Made> {
        let init_spec = self.init_spec.clone();
        let id = self.id.clone();
        let (spawned, pidfd) = self.spawn(&init_spec, stdio, Group::Own, &id).await?;
        let pid = spawned.pid;
        let recorded = procfs::ProcStat::read(pid)
            .map_err(Error::io(format!("read /proc/{pid}/stat")))
            .and_then(|stat| bundle::write_init_pid(&self.bundle, pid, stat.start_time));
        if let Err(err) = recorded {
            // The helper exits unstarted and the reaper collects it.
            let _ = sys::signal_pidfd(&pidfd, Signal::KILL);
            self.gates.remove(&pid);
            self.joining.remove(&pid);
            return Err(err);
        }
        self.registry.spawned(&self.id, pid, true, true);
        self.init = Some((pid, pidfd));
        Ok(Made::Held(spawned))
    }

    async fn checkpoint(&mut self, _: &Path, _: &CheckpointOptions) -> Result<()> {
        Err(no_checkpoints(&format!(
            "cannot checkpoint task {:?}",
            self.id
        )))
    }

    fn check_exec(&self, process: &oci_spec::runtime::Process) -> Result<()> {
        spec::process_spec(process, None).map(|_| ())
    }

    async fn exec(
        &mut self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: ChildStdio,
    ) -> Result<Made> {
        let name = format!("{} exec {exec_id}", self.id);
        let process = spec::process_spec(process, None)?;
        let init = self.init.as_ref().map_or(0, |(pid, _)| *pid);
        // The init's group, unless the init leads a session of its own (a terminal).
        let group = if self.init_spec.terminal {
            Group::Own
        } else {
            Group::Join(init)
        };
        // With a terminal, or a group of its own, the exec leads; otherwise the init does.
        let leads = group == Group::Own || process.terminal;
        let (spawned, _) = self.spawn(&process, stdio, group, &name).await?;
        self.registry.spawned(&self.id, spawned.pid, leads, false);
        Ok(Made::Held(spawned))
    }

    async fn start(&mut self, _: &Member, pid: i32) -> Result<()> {
        // Only what is left of the move into the cgroups: it went on since `Create`.
        self.settle().await;
        if let Some(Joined::Done(Err(err))) = self.joining.remove(&pid) {
            self.gates.remove(&pid);
            return Err(err);
        }
        let gate = self
            .gates
            .remove(&pid)
            .ok_or_else(|| Error::FailedPrecondition(format!("process {pid} has no start gate")))?;
        // A one-byte write into an empty pipe never blocks. EPIPE means the helper is gone;
        // its exit is on its way through the reaper.
        nix::unistd::write(&gate, &[gate::GO]).map_err(|errno| {
            Error::FailedPrecondition(format!(
                "process {pid} exited before it could be started: {errno}"
            ))
        })?;
        Ok(())
    }

    fn cancel(&mut self, _: &Member, pid: i32) {
        // The pending SIGKILL wins over the end-of-file the helper would read.
        self.gates.remove(&pid);
        self.joining.remove(&pid);
    }

    async fn signal_all(&mut self, signal: Signal) -> Result<()> {
        self.settle().await;
        self.signal_everything(signal)
    }

    async fn list(&mut self) -> Result<Vec<ProcStat>> {
        self.settle().await;
        self.quick().map_err(Error::io("list the task's processes"))
    }

    async fn set_paused(&mut self, paused: bool) -> Result<()> {
        self.settle().await;
        match self.cgroup().filter(|c| c.can_freeze()) {
            Some(cgroup) => freeze(cgroup, paused).await,
            // SIGSTOP or SIGCONT to every process of the task, which the task can see (its
            // parent gets SIGCHLD) and which misses a process forked meanwhile.
            None => self.signal_everything(if paused { Signal::STOP } else { Signal::CONT }),
        }
    }

    async fn update(&mut self, resources: &LinuxResources) -> Result<()> {
        let Some(cgroup) = self.cgroup() else {
            return Err(Error::FailedPrecondition(format!(
                "task {:?} has no cgroup to update: its spec names no linux.cgroupsPath, \
                 or the shim may not write cgroups here (see the shim's log)",
                self.id
            )));
        };
        let mut resources = Resources::from_linux(resources)?;
        if let Some(what) = resources.unenforced(cgroup.is_v2()) {
            warn!("{}: {what}", self.id);
        }
        if !resources.devices.is_empty() && !cgroup.is_v2() {
            // Only what changes, from what the cgroup allows now: a running container never
            // sees its devices all denied for a moment (see `cgroup/devices.rs`).
            let now = cgroup
                .read("devices", "devices.list")
                .ok()
                .and_then(|list| devices::State::from_list(&list));
            if let Some(now) = now {
                let target = devices::State::from_rules(&resources.devices);
                resources.devices = devices::transition(&now, &target);
            }
        }
        cgroup
            .apply(&resources)
            .map_err(|e| limits_error(cgroup, e))?;
        info!("{}: resources updated: {resources:?}", self.id);
        Ok(())
    }

    fn exit_recorded(&mut self, pid: i32) {
        let init = self.init.as_ref().is_some_and(|(p, _)| *p == pid);
        self.registry.exited(&self.id, pid, init);
        self.gates.remove(&pid);
        self.joining.remove(&pid);
    }

    async fn init_exited(&mut self) {
        // Not running from now on: a neighbour whose init exits at the same time sees it
        // stopped, and one of the two ends the strays (`model/host/members.rs`).
        if let Some((pid, _)) = &self.init {
            self.registry.exited(&self.id, *pid, true);
        }
        self.settle().await;
        end_all(self).await;
    }

    async fn release(&mut self) {
        self.gates.clear();
        self.settle().await;
        self.joining.clear();
        if let Some(cgroup) = self.cgroup() {
            // Empty already (the init's exit ended what was left), unless a process was put
            // in from outside.
            if cgroup.can_freeze() {
                let _ = cgroup.set_frozen(false);
            }
            end_all(cgroup).await;
            if let Err(err) = cgroup.remove() {
                warn!(
                    "{}: remove cgroup {}: {err}",
                    self.id,
                    cgroup.path.display()
                );
            }
        }
        if self.init.is_some() {
            bundle::remove_init_pid(&self.bundle);
        }
        self.registry.forget(&self.id);
    }
}

/// Freezes or thaws `cgroup` and waits, at most a second, until the kernel says it is.
/// v2 says so in `cgroup.events`, which an inotify watch wakes on; v1's freezer has no
/// notification, so its state is read right after the write (freezing usually completes
/// within it), then at 1, 2, 4, ... ms.
async fn freeze(cgroup: &Cgroup, frozen: bool) -> Result<()> {
    let mut events = cgroup
        .dir_of("freezer")
        .filter(|_| cgroup.is_v2())
        .and_then(|dir| OomWatch::modifications_of(&dir.join("cgroup.events")).ok());
    cgroup
        .set_frozen(frozen)
        .map_err(|e| cgroup_error(cgroup, e))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_millis(1);
    loop {
        if cgroup.is_frozen().map_err(|e| cgroup_error(cgroup, e))? == frozen {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        match events.as_mut() {
            Some(events) => {
                let _ = tokio::time::timeout_at(deadline, events.notified()).await;
            }
            None => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(64));
            }
        }
    }
    // Leave it as it was.
    let _ = cgroup.set_frozen(!frozen);
    Err(Error::Unavailable(format!(
        "cgroup {}: the kernel did not finish freezing it within a second",
        cgroup.path.display()
    )))
}

/// What a process held at its start gate is made of.
struct Held<'a> {
    /// The start-gate helper (this very binary).
    helper: &'a Path,
    /// What it runs, as whom, where.
    process: &'a ProcessSpec,
    /// The process group it goes into.
    group: Group,
    /// Who it is, for messages.
    name: &'a str,
    /// The container's cgroup, if it has one.
    cgroup: Option<&'a Cgroup>,
}

impl Held<'_> {
    /// Spawns the process as the start-gate helper (`helper`, this very binary), with the
    /// spec's environment, working directory and identity, waiting at the gate, in
    /// `cgroup` (see `model/host/spawn.rs`). Returns it, its pidfd, the gate's write end
    /// (`Start` writes to it, dropping it without a write makes the helper exit unstarted),
    /// and its move into the cgroup. A child that has not set up within [`BIRTH_DEADLINE`]
    /// is killed, and the call fails with the reason.
    async fn spawn(
        &self,
        stdio: ChildStdio,
    ) -> Result<(NewProcess, Arc<OwnedFd>, OwnedFd, Report)> {
        let (process, name) = (self.process, self.name);
        let (mut born, gate_write) = self.clone(stdio)?;
        match tokio::time::timeout(BIRTH_DEADLINE, born.report.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(spawn_error(name, Some(process), err)),
            Err(_) => {
                let _ = sys::signal_pidfd(&born.pidfd, Signal::KILL);
                return Err(Error::DeadlineExceeded(format!(
                    "spawn {name}: process {} was not set up within {BIRTH_DEADLINE:?} \
                     (its working directory {} hung, or its cgroup is frozen?): killed",
                    born.pid,
                    process.cwd.display()
                )));
            }
        }
        info!("{name}: created process {}, waiting for Start", born.pid);
        let pidfd = Arc::new(born.pidfd);
        Ok((
            NewProcess {
                pid: born.pid,
                pidfd: Some(pidfd.clone()),
                terminal: None,
            },
            pidfd,
            gate_write,
            born.report,
        ))
    }

    /// The clone of [`Held::spawn`], which returns at once: the child and the gate's write
    /// end. What it prepares for the child (raw pointers into `argv` and `envp`) stays here,
    /// on this thread's stack, and never crosses an `.await`.
    fn clone(&self, stdio: ChildStdio) -> Result<(spawn::Born, OwnedFd)> {
        let Held {
            helper,
            process,
            group,
            name,
            cgroup,
        } = *self;
        let program = process.program.to_string_lossy();
        let arg0 = "containerd-shim-sample-v2";
        process.check_exec_size(&[arg0, gate::SUBCOMMAND, &program], sys::arg_max())?;
        let (gate_read, gate_write) = pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe2"))?;
        let setup = ChildSetup::new(process, gate_read.as_raw_fd());
        let argv = [
            OsStr::new(arg0),
            OsStr::new(gate::SUBCOMMAND),
            process.program.as_os_str(),
        ]
        .into_iter()
        .chain(process.args.iter().map(OsStr::new));
        let env = process.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let mut birth = Birth::new(
            helper,
            argv,
            env,
            &process.cwd,
            [stdio.stdin, stdio.stdout, stdio.stderr],
        )
        .map_err(|e| Error::InvalidArgument(format!("spawn {name}: {e}")))?;
        if !process.terminal {
            birth.process_group(match group {
                Group::Own => 0,
                Group::Join(pgid) => pgid,
            });
        }
        if let Some(cgroup) = cgroup {
            let (dir, procs_files) = cgroup.placement();
            birth
                .cgroup(dir.as_deref(), &procs_files)
                .map_err(|e| cgroup_error(cgroup, e))?;
        }
        // SAFETY: `ChildSetup::apply` only makes async-signal-safe system calls on data
        // prepared before the clone (see `sys::child`).
        let born = unsafe { birth.spawn(&|| setup.apply()) }
            .map_err(|err| spawn_error(name, Some(process), err))?;
        // No `wait` ever: the reaper collects every child (see task/exits.rs), also one that failed.
        drop(gate_read);
        Ok((born, gate_write))
    }
}

/// A failed spawn of `name` as an error with the code that says whose fault it is.
/// `process` (known at `Create`) tells a refused `oomScoreAdj` apart.
fn spawn_error(name: &str, process: Option<&ProcessSpec>, err: io::Error) -> Error {
    match spawn::errno_of(&err) {
        // The pre-check makes this rare (the limit can shrink in between).
        Some(libc::E2BIG) => Error::InvalidArgument(format!(
            "spawn {name}: the arguments and environment exceed what one execve accepts \
             (ARG_MAX {} bytes): {err}",
            sys::arg_max()
        )),
        Some(libc::EACCES)
            if process.is_some_and(|p| lowers_oom_score_unallowed(p.oom_score_adj)) =>
        {
            Error::FailedPrecondition(format!(
                "spawn {name}: process.oomScoreAdj {} refused: it is below the shim's own, \
                 and lowering it needs CAP_SYS_RESOURCE ({err}); containerd's CRI plugin \
                 clamps it with restrict_oom_score_adj = true",
                process.and_then(|p| p.oom_score_adj).unwrap_or_default()
            ))
        }
        _ => Error::io(format!("spawn the start-gate helper for {name}"))(err),
    }
}

/// Whether `wanted` is an `oom_score_adj` the kernel refuses to set for us: below the
/// shim's own, without `CAP_SYS_RESOURCE` (what an `EACCES` of the child's write meant).
fn lowers_oom_score_unallowed(wanted: Option<i32>) -> bool {
    let Some(wanted) = wanted else {
        return false;
    };
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    // CAP_SYS_RESOURCE is capability 24 in the effective set.
    let capable = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0);
    own.is_some_and(|own| wanted < own) && !capable
}

/// What the child does between `fork` and the `exec` of the helper, prepared beforehand
/// so that [`ChildSetup::apply`] allocates nothing.
struct ChildSetup {
    /// The start gate's read end, moved to fd 3.
    gate: RawFd,
    /// Start a new session with the terminal (stdin) as controlling terminal.
    session: bool,
    /// The spec's `oom_score_adj`, if it names one.
    oom_score_adj: Option<i32>,
    /// Resource limits to set: (resource, soft, hard).
    rlimits: Vec<(Resource, u64, u64)>,
    /// The umask.
    umask: u32,
    /// Supplementary groups.
    groups: Vec<Gid>,
    /// The group id.
    gid: Gid,
    /// The user id.
    uid: Uid,
    /// `PR_SET_NO_NEW_PRIVS`.
    no_new_privileges: bool,
}

impl ChildSetup {
    fn new(process: &ProcessSpec, gate: RawFd) -> ChildSetup {
        let identity = &process.identity;
        ChildSetup {
            gate,
            session: process.terminal,
            oom_score_adj: process.oom_score_adj,
            rlimits: process.rlimits.clone(),
            umask: identity.umask,
            groups: identity.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
            gid: Gid::from_raw(identity.gid),
            uid: Uid::from_raw(identity.uid),
            no_new_privileges: process.no_new_privileges,
        }
    }

    /// Runs in the forked child: async-signal-safe system calls only (`sys::child`), on
    /// data allocated before the fork.
    fn apply(&self) -> std::io::Result<()> {
        use sys::child;
        child::place_fd(self.gate, gate::GATE_FD)?;
        // Descriptors the shim inherited without close-on-exec must not reach the process:
        // it starts with 0, 1, 2 and the gate only.
        child::close_on_exec_from(gate::GATE_FD + 1);
        if self.session {
            child::new_session_on_terminal()?;
        }
        // The shim inherits containerd's score, which the task must not: the spec's value
        // (the kubelet's QoS order: 1000 for BestEffort, 999 for Burstable pods), which
        // must hold, as runc makes it; else 0, where the kernel allows it.
        match self.oom_score_adj {
            Some(score) => child::set_oom_score_adj(score)?,
            None => {
                let _ = child::set_oom_score_adj(0);
            }
        }
        for &(resource, soft, hard) in &self.rlimits {
            child::set_rlimit(resource, soft, hard)?;
        }
        child::set_umask(self.umask);
        child::set_identity(&self.groups, self.gid, self.uid)?;
        if self.no_new_privileges {
            child::no_new_privileges()?;
        }
        Ok(())
    }
}

/// A refusal of limits, with the code that says whose fault it is: a value the kernel
/// refuses is the caller's (InvalidArgument), a controller it lacks the machine's
/// (FailedPrecondition).
fn limits_error(cgroup: &Cgroup, err: io::Error) -> Error {
    let what = format!("cgroup {}: {err}", cgroup.path.display());
    if err.kind() == io::ErrorKind::InvalidInput {
        return Error::InvalidArgument(what);
    }
    match resources::os_error_of(&err) {
        Some(libc::EINVAL | libc::ERANGE) => Error::InvalidArgument(what),
        Some(libc::EBUSY) => Error::FailedPrecondition(what),
        _ if err.kind() == io::ErrorKind::Unsupported => Error::FailedPrecondition(what),
        _ => cgroup_error(cgroup, err),
    }
}

/// An error of the cgroup's files, naming the cgroup.
fn cgroup_error(cgroup: &Cgroup, err: io::Error) -> Error {
    Error::io(format!("cgroup {}", cgroup.path.display()))(err)
}

/// The environment variable that chooses the cgroups of host-mode tasks (the shim has
/// containerd's environment): unset or `auto`, what the machine mounts (on a hybrid
/// machine its v1 hierarchies and its cgroup2 mount, as runc); `v2`, the cgroup2 mount
/// alone, as on a v2-only machine (a hybrid machine's `/sys/fs/cgroup/unified`: how this
/// project measures v2 on a v1 machine); `off`, none.
pub const CGROUPS_VAR: &str = "SAMPLE_SHIM_CGROUPS";

/// The machine's cgroup hierarchy, if the shim may write it; says once why not.
fn writable_cgroups() -> Option<Hierarchy> {
    if !nix::unistd::geteuid().is_root() {
        info!("not root: tasks run without cgroups");
        return None;
    }
    let chosen = std::env::var(CGROUPS_VAR).unwrap_or_default();
    let hierarchy = match chosen.as_str() {
        "off" => {
            info!("{CGROUPS_VAR}=off: tasks run without cgroups");
            return None;
        }
        "v2" => Hierarchy::detect().and_then(|h| match h {
            Hierarchy::V1(mut mounts) => mounts.remove(cgroup::UNIFIED).map(Hierarchy::V2),
            v2 => Some(v2),
        }),
        "" | "auto" => Hierarchy::detect(),
        other => {
            warn!("{CGROUPS_VAR}={other:?} is not auto, v2 or off: taken as auto");
            Hierarchy::detect()
        }
    };
    match &hierarchy {
        None => info!(
            "no cgroup hierarchy is mounted ({CGROUPS_VAR}={chosen:?}): tasks run without cgroups"
        ),
        Some(h) => debug!("cgroups: {h:?}"),
    }
    hierarchy
}

// A unit test's process has no reaper of its own: the test waits for its children.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::Command, time::Instant};

    use super::*;
    use crate::task::exits::LEFTOVER_DEADLINE;

    /// A tree whose quick look always misses everything, as the kernel's `children` lists
    /// can while children exit; the exhaustive look sees one real process.
    struct QuickLookMisses(i32);

    impl ProcessTree for QuickLookMisses {
        fn quick(&self) -> io::Result<Vec<ProcStat>> {
            Ok(Vec::new())
        }

        fn exhaustive(&self) -> io::Result<Vec<ProcStat>> {
            Ok(ProcStat::read(self.0)
                .into_iter()
                .filter(|p| p.state != 'Z')
                .collect())
        }
    }

    /// v2's freezer, waited for through `cgroup.events` (inotify), on the machine's cgroup2
    /// mount: a process in the cgroup is frozen, thawed, then ended by `end_all`.
    #[tokio::test]
    async fn a_v2_cgroup_freezes_and_thaws_on_cgroup_events() {
        use crate::cgroup::tests::{cgroup2_mount, may_write_cgroups};
        if !may_write_cgroups() {
            return;
        }
        let cgroup = Cgroup {
            hierarchy: Hierarchy::V2(cgroup2_mount().expect("a cgroup2 is mounted")),
            path: PathBuf::from(format!("/shim-sample-freeze/{}", std::process::id())),
        };
        cgroup.create().expect("create");
        let mut child = Command::new("sleep").arg("1000").spawn().expect("sleep");
        let checks = async {
            cgroup.add(child.id() as i32).map_err(Error::io("add"))?;
            freeze(&cgroup, true).await?;
            let frozen = cgroup.is_frozen().map_err(Error::io("read"))?;
            freeze(&cgroup, false).await?;
            let thawed = !cgroup.is_frozen().map_err(Error::io("read"))?;
            Ok::<_, Error>((frozen, thawed, end_all(&cgroup).await))
        };
        let result = checks.await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = cgroup.remove();
        let _ = Cgroup {
            path: PathBuf::from("/shim-sample-freeze"),
            ..cgroup.clone()
        }
        .remove();
        assert_eq!(result.expect("freeze and thaw"), (true, true, 0));
    }

    #[tokio::test]
    async fn a_process_the_quick_look_misses_is_still_killed() {
        let mut child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // This test plays the reaper for its own child, and gives up after 5 s.
        let reaper = std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    return Some(status);
                }
                if started.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let started = Instant::now();
        let left = end_all(&QuickLookMisses(pid)).await;
        let status = reaper.join().expect("reaper");
        assert_eq!(left, 0, "the process was still there after the deadline");
        let status = status.expect("end_all never killed the process");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(
            started.elapsed() < LEFTOVER_DEADLINE,
            "{:?}",
            started.elapsed()
        );
    }
}
