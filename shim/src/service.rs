//! The task logic behind containerd's `Task` service, and the one lock that orders
//! everything.
//!
//! The service is `containerd.task.v2.Task` from containerd's
//! [`runtime/v2/task/shim.proto`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/task/shim.proto).
//! The shim serves one container, or all the containers of a pod (`shim.rs` groups them):
//! each with its init process plus any exec processes, each known by its exec id
//! (`container.rs`), and its own processes among the shim's descendants (`members.rs`).
//!
//! All state sits behind one async mutex. Every RPC takes it, and so does every exit
//! ([`Service::process_exited`], the exit policy): one lock orders the events
//! (`/tasks/start` is published before the exit of the same process is handled), and no RPC
//! ever sees a task half-way through its exit. See "Concurrency" in docs/ARCHITECTURE.md.
//!
//! [`Service`] is the task logic, free of ttrpc: it takes the request messages, answers
//! with our [`Error`], and sends events to an [`EventSink`]. `rpc.rs` is the thin ttrpc
//! face the `containerd-shim` crate serves. The core's tests (`shim/tests/core.rs`) drive
//! [`Service`] directly, without containerd.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api::{self, ProcessInfo, Status};
use log::{debug, info, warn};
use tokio::{
    runtime::{Handle, RuntimeFlavor},
    sync::{
        mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
        Mutex, MutexGuard,
    },
};

use crate::{
    bundle,
    cgroup::{self, Cgroup, Hierarchy},
    container::{processes_of, validate_id, Container, Member},
    error::{Error, Result},
    events::{timestamp, EventSink, TaskEvent},
    exits::{kill_leftovers, ExitQueue, Reaped, LEFTOVER_DEADLINE},
    logs::LogContext,
    metrics,
    oom::OomWatch,
    process::{validate_signal, ExitStatus, Group, Process, State},
    procfs,
    spec::{self, Kind},
    stdio::StdioPaths,
    sys::{self, Signal},
};

/// How long `Delete` waits for the last output to reach the FIFOs.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// The containers of this shim, by id.
type Containers = HashMap<String, Container>;

/// The task logic: the state behind the lock, and every RPC as a method.
pub struct Service {
    /// The containers, from `Create` until `Delete`: one, or a pod's.
    containers: Mutex<Containers>,
    /// Where events go: containerd in the shim, a recorder in tests.
    events: Box<dyn EventSink>,
    /// Fired by `Shutdown` once no container is left: the shim then exits.
    shutdown: Arc<ExitSignal>,
    /// Set (under the lock) by that `Shutdown`: a `Create` that comes after, because a
    /// `start` joined the group's shim just before, is refused rather than taken into a
    /// shim on its way out.
    closing: AtomicBool,
    /// The start-gate helper every process is spawned as (`gate.rs`): this binary.
    helper: PathBuf,
    /// The machine's cgroups, when the shim may write them (root, a hierarchy mounted).
    cgroups: Option<Hierarchy>,
    /// The containerd namespace of the shim's containers (`-namespace`), for loggers.
    namespace: String,
    /// Where each container's OOM watch sends its id when the kernel notifies
    /// (`oom.rs`); [`Service::watch_ooms`] takes it from there.
    ooms: UnboundedSender<String>,
}

/// Finds the container `id`.
fn find<'a>(containers: &'a mut Containers, id: &str) -> Result<&'a mut Container> {
    containers
        .get_mut(id)
        .ok_or_else(|| Error::NotFound(format!("task {id:?} not found in this shim")))
}

impl Service {
    /// Makes the service and starts its exit watcher on `exits` (see `exits.rs`), which
    /// must have been subscribed before anything is spawned. `helper` is the executable of
    /// the start-gate helper: `/proc/self/exe` in the shim.
    ///
    /// # Panics
    ///
    /// When not called on a current-thread tokio runtime: the exit policy and the RPCs rely
    /// on never running at the same time (see "Concurrency" in docs/ARCHITECTURE.md).
    pub fn new(
        events: impl EventSink,
        shutdown: Arc<ExitSignal>,
        exits: UnboundedReceiver<Reaped>,
        helper: &Path,
        namespace: &str,
    ) -> Arc<Service> {
        assert_eq!(
            Handle::current().runtime_flavor(),
            RuntimeFlavor::CurrentThread,
            "the shim's service must run on a current-thread runtime"
        );
        let (ooms, oom_notices) = unbounded_channel();
        let service = Arc::new(Service {
            ooms,
            containers: Mutex::new(HashMap::new()),
            events: Box::new(events),
            shutdown,
            closing: AtomicBool::new(false),
            helper: helper.to_path_buf(),
            cgroups: writable_cgroups(),
            namespace: namespace.to_string(),
        });
        tokio::spawn(service.clone().watch_exits(exits));
        tokio::spawn(service.clone().watch_ooms(oom_notices));
        service
    }

    /// `Create`: spawns the init process, held at its start gate (`gate.rs`): the pause
    /// process for a pod's sandbox (`pause.rs`), otherwise what the spec asks (`spec.rs`).
    /// A pod's container is created only in the shim that serves its sandbox.
    pub async fn create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        validate_id("task", &req.id)?;
        let mut containers = self.containers.lock().await;
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(format!(
                "this shim is shutting down (its last container was deleted): create task {:?} \
                 again to get a new one",
                req.id
            )));
        }
        if containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "task {:?} already exists in this shim",
                req.id
            )));
        }
        if !req.rootfs.is_empty() {
            debug!(
                "{}: ignoring {} rootfs mounts: host processes",
                req.id,
                req.rootfs.len()
            );
        }
        let bundle = PathBuf::from(&req.bundle);
        let oci = spec::read_spec(&bundle)?;
        let kind = spec::kind(&oci)?;
        if let Kind::PodMember { sandbox } = &kind {
            match containers.get(sandbox) {
                None => {
                    return Err(Error::FailedPrecondition(format!(
                        "the sandbox {sandbox:?} of container {:?} is not in this shim: \
                         its shim exited or was killed, or it is in another namespace; \
                         the pod must be created again",
                        req.id
                    )))
                }
                Some(pod) if !pod.is_running() || pod.init.exit_pending() => {
                    return Err(Error::FailedPrecondition(format!(
                        "the sandbox {sandbox:?} of container {:?} has stopped: \
                         the pod must be created again",
                        req.id
                    )))
                }
                Some(_) => {}
            }
        }
        let process = spec::init_process(&oci, &kind, &self.helper)?;
        let cgroup = match (&self.cgroups, cgroup::from_spec(&oci)?) {
            (Some(hierarchy), Some((path, resources))) => {
                let cgroup = Cgroup {
                    hierarchy: hierarchy.clone(),
                    path,
                };
                if let Err(err) = cgroup.create() {
                    let _ = cgroup.remove();
                    return Err(cgroup_error(&cgroup, err));
                }
                if let Err(err) = cgroup.apply(&resources) {
                    let _ = cgroup.remove();
                    return Err(limits_error(&cgroup, err));
                }
                Some(cgroup)
            }
            _ => None,
        };
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let log = self.log_context(&req.id);
        let init = match spawn_init(&self.helper, &process, stdio, &log, &bundle, &cgroup) {
            Ok(init) => init,
            Err(err) => {
                // The helper, killed, leaves the cgroup as it exits.
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.destroy().await;
                }
                return Err(err);
            }
        };
        let pid = init.pid;
        self.events
            .publish(TaskEvent::Create {
                id: req.id.clone(),
                bundle: req.bundle,
                stdio: init.stdio.clone(),
                pid,
            })
            .await;
        let mut container = Container::new(req.id.clone(), bundle, init, cgroup);
        // Kills counted before (a cgroup left by an earlier task of the same path) are not
        // this task's.
        container.oom_kills = container
            .cgroup
            .as_ref()
            .and_then(Cgroup::oom_kills)
            .unwrap_or(0);
        container.oom_watch = self.watch_oom(&container);
        containers.insert(req.id, container);
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// `Start`: opens the start gate of the init or of an exec process.
    pub async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let mut containers = self.containers.lock().await;
        let container = find(&mut containers, &req.id)?;
        let process = container.process(&req.exec_id)?;
        process.start()?;
        let pid = process.pid;
        info!("{}: started process {pid} {:?}", container.id, req.exec_id);
        let event = if req.exec_id.is_empty() {
            TaskEvent::Start {
                id: container.id.clone(),
                pid,
            }
        } else {
            TaskEvent::ExecStarted {
                id: container.id.clone(),
                exec_id: req.exec_id,
                pid,
            }
        };
        self.events.publish(event).await;
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// Locks the containers, after waiting out a process of `id` that has exited but whose
    /// exit is not recorded yet (the reaper has it; the exit policy is about to run). An
    /// answer given in between would say RUNNING for a process that is gone.
    async fn lock_settled(&self, id: &str, exec_id: &str) -> Result<MutexGuard<'_, Containers>> {
        let mut containers = self.containers.lock().await;
        let process = find(&mut containers, id)?.process(exec_id)?;
        if !process.exit_pending() {
            return Ok(containers);
        }
        let mut exited = process.subscribe_exit();
        // The exit policy needs the lock to record the exit. It takes at most two
        // LEFTOVER_DEADLINEs per container (in a pod, other containers' exits may be handled
        // first); should an exit ever go missing, answer from the state as it is rather than
        // hang the RPC.
        let policies = containers.len().max(1) as u32;
        drop(containers);
        let limit = 2 * LEFTOVER_DEADLINE * policies + Duration::from_secs(1);
        if tokio::time::timeout(limit, exited.wait_for(Option::is_some))
            .await
            .is_err()
        {
            warn!("{id} {exec_id:?}: exited, but no exit recorded after {limit:?}");
        }
        Ok(self.containers.lock().await)
    }

    /// `State`: where a process is in its life, and how it ended.
    pub async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let mut containers = self.lock_settled(&req.id, &req.exec_id).await?;
        let container = find(&mut containers, &req.id)?;
        let (id, bundle, paused) = (
            container.id.clone(),
            container.bundle.display().to_string(),
            container.paused,
        );
        let process = container.process(&req.exec_id)?;
        let (status, exit) = match process.state() {
            State::Created => (Status::CREATED, None),
            State::Running if paused => (Status::PAUSED, None),
            State::Running => (Status::RUNNING, None),
            State::Stopped(exit) => (Status::STOPPED, Some(exit)),
        };
        Ok(api::StateResponse {
            id,
            bundle,
            pid: process.pid as u32,
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    /// `Wait`: returns once the process has exited (at once if it already has).
    pub async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let mut exited = {
            let mut containers = self.containers.lock().await;
            find(&mut containers, &req.id)?
                .process(&req.exec_id)?
                .subscribe_exit()
        };
        // Returns at once if the process already exited: the channel keeps the last value.
        let exit = exited
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|exit| *exit)
            .ok_or_else(|| Error::NotFound(format!("task {:?} was deleted", req.id)))?;
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    /// `Kill`: a signal to one process or, with `all`, to every process of the task.
    pub async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let signal = validate_signal(req.signal)?;
        let mut containers = self.containers.lock().await;
        let members = processes_of(containers.values(), &req.id);
        let container = find(&mut containers, &req.id)?;
        let pgid = container.init.pid;
        let all = req.all && req.exec_id.is_empty();
        let process = container.process(&req.exec_id)?;
        if !all {
            process.kill(signal)?;
        } else {
            process.kill_group(signal)?;
            // Processes outside the init's process group (the execs of a terminal task, a
            // daemon that called setsid) are still the container's (`members.rs`).
            for process in members.list().unwrap_or_default() {
                if process.pgid != pgid {
                    let _ = sys::signal_pid(process.pid, signal);
                }
            }
        }
        // A frozen process dies of SIGKILL only once thawed (cgroup v1): killing a paused
        // task's init, or all of it, thaws it. It is not resumed: it ends.
        let ends = all || req.exec_id.is_empty();
        if container.paused && signal == Signal::KILL && ends {
            if let Some(cgroup) = &container.cgroup {
                let _ = cgroup.set_frozen(false);
            }
        }
        info!(
            "{}: sent signal {} to {:?} (all: {all})",
            container.id,
            signal.number(),
            req.exec_id
        );
        Ok(())
    }

    /// `Delete`: forgets a stopped process (or cancels one never started); for the init,
    /// the whole task.
    pub async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut containers = self.lock_settled(&req.id, &req.exec_id).await?;
        let process = find(&mut containers, &req.id)?.process(&req.exec_id)?;
        let exit = match process.state() {
            State::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "task must be stopped before deletion: process {} of {:?} is running",
                    process.pid, req.id
                )))
            }
            State::Stopped(exit) => exit,
            State::Created => {
                // Never started: the helper is killed at the gate, nothing ever ran.
                let mut exited = process.subscribe_exit();
                process.cancel_start()?;
                drop(containers); // the exit policy needs the lock to record the exit
                let exit = exited.wait_for(Option::is_some).await.ok().and_then(|e| *e);
                containers = self.containers.lock().await;
                find(&mut containers, &req.id)?.process(&req.exec_id)?;
                exit.ok_or_else(|| Error::NotFound(format!("task {:?} was deleted", req.id)))?
            }
        };
        let container = find(&mut containers, &req.id)?;
        if !req.exec_id.is_empty() {
            if let Some(mut exec) = container.execs.remove(&req.exec_id) {
                // Not under the lock: an exec's background children may hold its output
                // open until the drain limit, and nothing else should wait for that.
                drop(containers);
                exec.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
                info!(
                    "{}: deleted exec {:?}, exit code {}",
                    req.id, req.exec_id, exit.code
                );
                return Ok(delete_response(exec.pid, exit));
            }
        }
        let mut container = containers
            .remove(&req.id)
            .ok_or_else(|| Error::NotFound(req.id.clone()))?;
        // Out of the table, nothing else can happen to it: drain its output without the
        // lock, which the pod's other containers need meanwhile.
        drop(containers);
        container.init.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
        bundle::remove_init_pid(&container.bundle);
        if let Some(watch) = &container.oom_watch {
            watch.abort();
        }
        if let Some(cgroup) = &container.cgroup {
            // Empty already (the init's exit killed what was left), unless a process was
            // put in from outside.
            if let Err(err) = cgroup.destroy().await {
                warn!(
                    "{}: remove cgroup {}: {err}",
                    container.id,
                    cgroup.path.display()
                );
            }
        }
        let pid = container.init.pid;
        self.events
            .publish(TaskEvent::Delete {
                id: container.id.clone(),
                pid,
                exit,
            })
            .await;
        info!("{}: deleted, exit code {}", container.id, exit.code);
        Ok(delete_response(pid, exit))
    }

    /// `Exec`: spawns another process in the task, held at its start gate.
    pub async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        validate_id("exec", &req.exec_id)?;
        let mut containers = self.containers.lock().await;
        let container = find(&mut containers, &req.id)?;
        if container.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec process {:?} already exists in task {:?}",
                req.exec_id, req.id
            )));
        }
        if !matches!(container.init.state(), State::Running) || container.init.exit_pending() {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {:?}: its init process is not running",
                req.id
            )));
        }
        if container.paused {
            // It would start frozen (or stopped), and could not be cancelled until resumed.
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {:?}: it is paused; resume it first",
                req.id
            )));
        }
        let oci: oci_spec::runtime::Process = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec request without a process spec".into()))
            .and_then(|any| {
                serde_json::from_slice(&any.value)
                    .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))
            })?;
        let process = spec::process_spec(&oci, None)?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let label = format!("{} exec {}", req.id, req.exec_id);
        let group = container.exec_group();
        // With a terminal, or a group of its own, the exec leads; otherwise the init does.
        let leads = group == Group::Own || process.terminal;
        // An exec's logger logs for the exec, as with containerd's runc shim.
        let log = self.log_context(&req.exec_id);
        let exec = Process::spawn(&self.helper, &process, stdio, group, &label, &log)?;
        if let Some(cgroup) = &container.cgroup {
            if let Err(err) = cgroup.add(exec.pid) {
                let _ = exec.kill(Signal::KILL);
                return Err(cgroup_error(cgroup, err));
            }
        }
        container.add_exec(req.exec_id.clone(), exec, leads);
        self.events
            .publish(TaskEvent::ExecAdded {
                id: req.id,
                exec_id: req.exec_id,
            })
            .await;
        Ok(())
    }

    /// `Pids`: every live process of the task.
    pub async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let mut containers = self.containers.lock().await;
        find(&mut containers, &req.id)?;
        let processes = processes_of(containers.values(), &req.id)
            .list()
            .map_err(Error::io("list the task's processes"))?
            .into_iter()
            .filter(|p| p.state != 'Z')
            .map(|p| ProcessInfo {
                pid: p.pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// `CloseIO`: end-of-file on the process's stdin, once pending input is delivered.
    pub async fn close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let process = find(&mut containers, &req.id)?.process(&req.exec_id)?;
        if req.stdin {
            process.io.close_stdin();
        }
        Ok(())
    }

    /// `ResizePty`: the window size of the process's terminal.
    pub async fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let process = find(&mut containers, &req.id)?.process(&req.exec_id)?;
        process.io.resize(req.width, req.height)
    }

    /// `Pause` and `Resume`: the task's cgroup frozen or thawed; without a cgroup (or a
    /// freezer), SIGSTOP or SIGCONT to every process of the task, which the task can see
    /// (its parent gets SIGCHLD) and which misses a process forked meanwhile.
    pub async fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let members = processes_of(containers.values(), id);
        let container = find(&mut containers, id)?;
        if !matches!(container.init.state(), State::Running) || container.init.exit_pending() {
            return Err(Error::FailedPrecondition(format!(
                "task {id:?} is not running"
            )));
        }
        if container.paused == pause {
            let now = if pause { "paused" } else { "not paused" };
            return Err(Error::FailedPrecondition(format!(
                "task {id:?} is already {now}"
            )));
        }
        match container.cgroup.as_ref().filter(|c| c.can_freeze()) {
            Some(cgroup) => freeze(cgroup, pause).await?,
            None => {
                let signal = if pause { Signal::STOP } else { Signal::CONT };
                container.init.kill_group(signal)?;
                for process in members.list().unwrap_or_default() {
                    let _ = sys::signal_pid(process.pid, signal);
                }
            }
        }
        container.paused = pause;
        let id = id.to_string();
        let event = if pause {
            TaskEvent::Paused { id }
        } else {
            TaskEvent::Resumed { id }
        };
        self.events.publish(event).await;
        Ok(())
    }

    /// `Stats`: CPU, memory and pids of the task, from its cgroup or `/proc`
    /// (`metrics.rs`).
    pub async fn stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let mut containers = self.containers.lock().await;
        let stats = match &find(&mut containers, &req.id)?.cgroup {
            Some(cgroup) => metrics::of_cgroup(cgroup).map_err(|e| cgroup_error(cgroup, e))?,
            None => {
                let processes = processes_of(containers.values(), &req.id)
                    .list()
                    .map_err(Error::io("list the task's processes"))?;
                metrics::of_processes(&processes).map_err(Error::io("encode metrics"))?
            }
        };
        Ok(api::StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    /// `Update`: new limits for the task's cgroup (`ctr task update`, the CRI plugin's
    /// UpdateContainerResources). The resources come as the runtime spec's
    /// `LinuxResources`, in JSON.
    pub async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let mut containers = self.containers.lock().await;
        let container = find(&mut containers, &req.id)?;
        let Some(cgroup) = &container.cgroup else {
            return Err(Error::FailedPrecondition(format!(
                "task {:?} has no cgroup to update: its spec names no linux.cgroupsPath, \
                 or the shim may not write cgroups here (see the shim's log)",
                req.id
            )));
        };
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("Update without resources".to_string()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "resources of type {:?} are not the runtime spec's LinuxResources in JSON: {e}",
                    any.type_url
                ))
            })?;
        let resources = cgroup::Resources::from_linux(&resources);
        cgroup
            .apply(&resources)
            .map_err(|e| limits_error(cgroup, e))?;
        info!("{}: resources updated: {resources:?}", container.id);
        Ok(())
    }

    /// `Connect`: the shim's pid and the task's.
    pub async fn connect(&self, req: api::ConnectRequest) -> Result<api::ConnectResponse> {
        let containers = self.containers.lock().await;
        let task_pid = containers.get(&req.id).map_or(0, |c| c.init.pid as u32);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// `Shutdown`: the shim exits once no container is left; otherwise it stays
    /// (containerd asks after deleting each container of a pod).
    pub async fn shutdown(&self) {
        let containers = self.containers.lock().await;
        if !containers.is_empty() {
            let left = containers.len();
            debug!("shutdown requested while {left} containers are left: staying up");
            return;
        }
        self.closing.store(true, Ordering::SeqCst);
        info!("no container left: shutting down");
        self.shutdown.signal();
    }

    /// Feeds every exit to the exit policy, forever (until the reaper's channel closes).
    async fn watch_exits(self: Arc<Self>, exits: UnboundedReceiver<Reaped>) {
        let mut exits = ExitQueue::new(exits);
        while let Some(reaped) = exits.next().await {
            self.process_exited(reaped, &mut exits).await;
        }
    }

    /// Who a logger of process `id` (a container's init, or an exec) logs for (`logs.rs`).
    fn log_context(&self, id: &str) -> LogContext {
        LogContext {
            container_id: id.to_string(),
            namespace: self.namespace.clone(),
        }
    }

    /// Starts the task that waits for `container`'s OOM notifications, if it has a cgroup
    /// with a memory controller; it sends the container id to [`Service::watch_ooms`].
    fn watch_oom(&self, container: &Container) -> Option<tokio::task::AbortHandle> {
        let cgroup = container.cgroup.as_ref()?;
        let mut watch = match OomWatch::new(cgroup) {
            Ok(watch) => watch?,
            Err(err) => {
                warn!("{}: no OOM notifications: {err}", container.id);
                return None;
            }
        };
        let (id, ooms) = (container.id.clone(), self.ooms.clone());
        let task = tokio::spawn(async move {
            while watch.notified().await.is_ok() && ooms.send(id.clone()).is_ok() {}
        });
        Some(task.abort_handle())
    }

    /// Publishes `/tasks/oom` for each container whose OOM watch fired and whose cgroup
    /// counts a new OOM kill.
    async fn watch_ooms(self: Arc<Self>, mut notices: UnboundedReceiver<String>) {
        while let Some(id) = notices.recv().await {
            let mut containers = self.containers.lock().await;
            if let Some(container) = containers.get_mut(&id) {
                self.check_oom(container).await;
            }
        }
    }

    /// Publishes one `/tasks/oom` when `container`'s cgroup counts more OOM kills than
    /// already reported.
    async fn check_oom(&self, container: &mut Container) {
        let Some(kills) = container.cgroup.as_ref().and_then(Cgroup::oom_kills) else {
            return;
        };
        if kills > container.oom_kills {
            container.oom_kills = kills;
            warn!(
                "{}: the OOM killer killed a process of the task",
                container.id
            );
            self.events
                .publish(TaskEvent::Oom {
                    id: container.id.clone(),
                })
                .await;
        }
    }

    /// The exit policy, all of it, under one acquisition of the lock.
    ///
    /// - An exec process: its exit is recorded (waking its `Wait`s) and `/tasks/exit` goes
    ///   out.
    /// - The init process: the task is over. What is left of it is killed first
    ///   ([`kill_leftovers`]), then the exits of the exec processes are reported, those
    ///   already queued and, for at most [`LEFTOVER_DEADLINE`], those still on their way, so
    ///   that an exec's `/tasks/exit` never follows its task's. Then the init's exit.
    /// - Any other pid: a descendant of a task, collected by the reaper and reported by
    ///   nobody.
    ///
    /// An exit of another container read while waiting for the execs is set aside
    /// ([`ExitQueue::defer`]) and handled right after this one.
    ///
    /// The lock is held throughout, so no RPC sees the task half-way through; in a pod, the
    /// other containers' RPCs wait too, at most two [`LEFTOVER_DEADLINE`]s. Before the
    /// policy runs (the process has exited, the exit is on its way from the reaper), the
    /// RPCs see it too, through the process's pidfd ([`Process::exit_pending`]): `State`
    /// and `Delete` wait for the exit to be recorded, then answer STOPPED with its code;
    /// `Exec` and `Pause` are refused (FailedPrecondition); `Kill` finds the process
    /// finished (NotFound). From the moment the init exits, the three agree it stopped, as
    /// containerd's runc shim answers once its init exited.
    pub async fn process_exited(&self, reaped: Reaped, exits: &mut ExitQueue) {
        let mut containers = self.containers.lock().await;
        // A pid is free for reuse once reaped: a process created since may have it too.
        // The one that exited is the one whose pidfd says so.
        let mut candidates = containers.values().filter_map(|c| {
            let member = c.live_member(reaped.pid)?;
            Some((c.id.clone(), member, c.exit_pending(reaped.pid)))
        });
        let first = candidates.next();
        let Some((id, member, _)) = candidates.find(|(_, _, pending)| *pending).or(first) else {
            // A descendant's exit: maybe the last of a past leader's group.
            forget_past_leaders(&mut containers);
            return;
        };
        let leftovers = processes_of(containers.values(), &id);
        let Some(container) = containers.get_mut(&id) else {
            return;
        };
        if member == Member::Init {
            if let Some(cgroup) = container.cgroup.as_ref().filter(|_| container.paused) {
                // Frozen processes would not die (v1) until thawed.
                let _ = cgroup.set_frozen(false);
            }
            kill_leftovers(&leftovers).await;
            let deadline = tokio::time::Instant::now() + LEFTOVER_DEADLINE;
            while container.has_live_execs() {
                // An exec's exit may have been set aside already, while another container's
                // exit policy ran: it comes before the reaper's next.
                let is_exec =
                    |r: &Reaped| matches!(container.live_member(r.pid), Some(Member::Exec(_)));
                let queued = match exits.take_deferred(is_exec) {
                    Some(deferred) => deferred,
                    None => match exits.from_reaper_until(deadline).await {
                        Some(queued) => queued,
                        None => {
                            warn!("an exec process outlived its init by {LEFTOVER_DEADLINE:?}");
                            break;
                        }
                    },
                };
                match container.live_member(queued.pid) {
                    Some(exec @ Member::Exec(_)) => {
                        self.record_exit(container, &exec, queued.code).await;
                    }
                    // Another container's, or a descendant's: its turn comes next.
                    _ => exits.defer(queued),
                }
            }
        }
        self.record_exit(container, &member, reaped.code).await;
        forget_past_leaders(&mut containers);
    }

    /// Records one process's exit and publishes `/tasks/exit`, after the `/tasks/oom` of
    /// an OOM kill not reported yet (the kill may well be this one).
    async fn record_exit(&self, container: &mut Container, member: &Member, code: i32) {
        self.check_oom(container).await;
        let Some((process, reported_id)) = container.member(member) else {
            return;
        };
        let exit = process.set_exited(code as u32);
        let pid = process.pid;
        if *member == Member::Init {
            container.paused = false;
        }
        info!(
            "{}: process {pid} ({reported_id}) exited with {}",
            container.id, exit.code
        );
        self.events
            .publish(TaskEvent::Exit {
                id: container.id.clone(),
                exec_id: reported_id,
                pid,
                exit,
            })
            .await;
    }
}

/// Spawns a task's init process at its start gate, puts it in its cgroup and writes its
/// pid into the bundle; on failure, kills it and leaves nothing behind.
fn spawn_init(
    helper: &Path,
    process: &spec::ProcessSpec,
    stdio: StdioPaths,
    log: &LogContext,
    bundle: &Path,
    cgroup: &Option<Cgroup>,
) -> Result<Process> {
    let init = Process::spawn(helper, process, stdio, Group::Own, &log.container_id, log)?;
    let pid = init.pid;
    // Into the cgroup while it waits at its start gate: whatever it forks is in too.
    let placed = match cgroup {
        Some(cgroup) => cgroup.add(pid).map_err(|e| cgroup_error(cgroup, e)),
        None => Ok(()),
    };
    let recorded = placed.and_then(|()| {
        procfs::ProcStat::read(pid)
            .map_err(Error::io(format!("read /proc/{pid}/stat")))
            .and_then(|stat| bundle::write_init_pid(bundle, pid, stat.start_time))
    });
    if let Err(err) = recorded {
        // The helper exits unstarted and the reaper collects it.
        let _ = init.kill_group(Signal::KILL);
        return Err(err);
    }
    Ok(init)
}

/// Freezes or thaws `cgroup` and waits, at most a second, until the kernel says it is.
async fn freeze(cgroup: &Cgroup, frozen: bool) -> Result<()> {
    cgroup
        .set_frozen(frozen)
        .map_err(|e| cgroup_error(cgroup, e))?;
    for _ in 0..1000 {
        if cgroup.is_frozen().map_err(|e| cgroup_error(cgroup, e))? == frozen {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Leave it as it was.
    let _ = cgroup.set_frozen(!frozen);
    Err(Error::Unavailable(format!(
        "cgroup {}: the kernel did not finish freezing it within a second",
        cgroup.path.display()
    )))
}

/// A refusal of limits, with the code that says whose fault it is: a value the kernel
/// refuses is the caller's (InvalidArgument), a controller it lacks the machine's
/// (FailedPrecondition).
fn limits_error(cgroup: &Cgroup, err: std::io::Error) -> Error {
    let what = format!("cgroup {}: {err}", cgroup.path.display());
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ERANGE) => Error::InvalidArgument(what),
        Some(libc::EBUSY) => Error::FailedPrecondition(what),
        _ if err.kind() == std::io::ErrorKind::Unsupported => Error::FailedPrecondition(what),
        _ => cgroup_error(cgroup, err),
    }
}

/// An error of the cgroup's files, naming the cgroup.
fn cgroup_error(cgroup: &Cgroup, err: std::io::Error) -> Error {
    Error::io(format!("cgroup {}", cgroup.path.display()))(err)
}

/// The machine's cgroup hierarchy, if the shim may write it; says once why not.
fn writable_cgroups() -> Option<Hierarchy> {
    if !nix::unistd::geteuid().is_root() {
        info!("not root: tasks run without cgroups");
        return None;
    }
    let hierarchy = Hierarchy::detect();
    if hierarchy.is_none() {
        info!("no cgroup hierarchy is mounted: tasks run without cgroups");
    }
    hierarchy
}

/// Forgets the leaders whose process exited and whose groups and sessions are empty, so
/// that a pid the kernel hands out again is never taken for theirs (`members.rs`). The look
/// is the exhaustive one: a leader forgotten while its group lives would turn the group's
/// processes into strays.
fn forget_past_leaders(containers: &mut Containers) {
    if !containers.values().any(Container::has_past_leaders) {
        return;
    }
    let shim = std::process::id() as i32;
    let Ok(processes) = procfs::descendants_exhaustive(shim) else {
        return;
    };
    let in_use: HashSet<i32> = processes
        .iter()
        .filter(|p| p.state != 'Z')
        .flat_map(|p| [p.pgid, p.sid])
        .collect();
    for container in containers.values_mut() {
        container.forget_leaders(&in_use);
    }
}

fn delete_response(pid: i32, exit: ExitStatus) -> api::DeleteResponse {
    api::DeleteResponse {
        pid: pid as u32,
        exit_status: exit.code,
        exited_at: Some(timestamp(exit.at)).into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_refuses_unknown_tasks() {
        let mut empty = Containers::new();
        assert!(matches!(find(&mut empty, "a"), Err(Error::NotFound(_))));
    }
}
