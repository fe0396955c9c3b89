//! The task service: containerd's `Task` RPCs, routed to the containers of the shim.
//!
//! The service is `containerd.task.v2.Task` from containerd's
//! [`runtime/v2/task/shim.proto`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/task/shim.proto).
//! The shim serves one container, or all the containers of a pod (`task/shim.rs` groups them).
//! The service keeps only what spans them: the table of containers by id, the rules between
//! them (a pod's container needs its running sandbox; no `Create` once `Shutdown` began),
//! the routing of exits (`task/exits.rs`), and the process model that makes each container's
//! processes (`model/mod.rs`, today `model/host/mod.rs`). Everything that happens to one container, and the
//! order of its events, is the container's (`task/container.rs`), under its own lock.
//!
//! [`Service`] is free of ttrpc: it takes the request messages, answers with our [`Error`],
//! and sends events to an [`EventSink`]. `task/rpc.rs` is the thin ttrpc face the daemon
//! serves (`task/daemon.rs`). The core's tests (`shim/tests/core.rs`) drive [`Service`]
//! directly, without containerd.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api;
use log::{debug, info};
use tokio::{
    runtime::{Handle, RuntimeFlavor},
    sync::mpsc::UnboundedReceiver,
};

use crate::{
    error::{Error, Result},
    model::host::members::Registry,
    model::host::Host,
    model::modes::Modes,
    model::ProcessModel,
    task::container::{validate_id, Container, Shared},
    task::events::{timestamp, EventSink},
    task::exits::{Reaped, Router},
    task::process::{validate_signal, ExitStatus},
    task::spec::{self, Kind},
};

/// The task service: the shim's containers, and every RPC as a method.
pub struct Service {
    /// The containers, from `Create` until `Delete`: one, or a pod's. Held only to look up
    /// or change the table, never across an `.await`.
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// What the containers share: events, exit routes, the registry.
    shared: Arc<Shared>,
    /// How containers' processes run.
    model: Box<dyn ProcessModel>,
    /// Fired by `Shutdown` once no container is left: the shim then exits.
    shutdown: Arc<ExitSignal>,
    /// Set (with the table locked) by that `Shutdown`: a `Create` that comes after, because
    /// a `start` joined the group's shim just before, is refused rather than taken into a
    /// shim on its way out.
    closing: AtomicBool,
    /// Set by a `Shutdown` that found a container left, cleared by the next `Create` that
    /// succeeds: if that `Create` fails instead, the shim had nothing left to serve.
    shutdown_asked: AtomicBool,
}

impl Service {
    /// Makes the service with the host process model and starts routing the exits of
    /// `exits` (see `task/exits.rs`), which must have been subscribed before anything is
    /// spawned. `helper` is the executable of the start-gate helper: `/proc/self/exe` in the
    /// shim.
    ///
    /// # Panics
    ///
    /// When not called on a current-thread tokio runtime: a process is routed before the
    /// reaper can run because both share the one thread (see "Concurrency" in
    /// docs/ARCHITECTURE.md).
    pub fn new(
        events: impl EventSink,
        shutdown: Arc<ExitSignal>,
        exits: UnboundedReceiver<Reaped>,
        helper: &Path,
        namespace: &str,
    ) -> Arc<Service> {
        let registry = Arc::new(Registry::default());
        let router = Router::serve(exits);
        let host = Host::new(helper, registry.clone());
        let model = Modes::new(host, router.clone(), namespace);
        Service::with_model(
            events,
            shutdown,
            router,
            Box::new(model),
            registry,
            namespace,
        )
    }

    /// [`Service::new`] with another process model.
    pub fn with_model(
        events: impl EventSink,
        shutdown: Arc<ExitSignal>,
        router: Arc<Router>,
        model: Box<dyn ProcessModel>,
        registry: Arc<Registry>,
        namespace: &str,
    ) -> Arc<Service> {
        assert_eq!(
            Handle::current().runtime_flavor(),
            RuntimeFlavor::CurrentThread,
            "the shim's service must run on a current-thread runtime"
        );
        let shared = Arc::new(Shared {
            events: Box::new(events),
            router,
            registry,
            namespace: namespace.to_string(),
        });
        Arc::new(Service {
            containers: Mutex::new(HashMap::new()),
            shared,
            model,
            shutdown,
            closing: AtomicBool::new(false),
            shutdown_asked: AtomicBool::new(false),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        // Nothing panics while holding it.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container `id`.
    fn get(&self, id: &str) -> Result<Arc<Container>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id:?} not found in this shim")))
    }

    /// Takes `container` out of the table, if it is still the one there.
    fn forget(&self, id: &str, container: &Arc<Container>) {
        let mut table = self.table();
        if table.get(id).is_some_and(|c| Arc::ptr_eq(c, container)) {
            table.remove(id);
        }
    }

    /// `Create`: the container's init process, held before its program runs: the pause
    /// process for a pod's sandbox (`model/host/pause.rs`), otherwise what the spec asks (`task/spec.rs`).
    /// A pod's container is created only in the shim that serves its sandbox.
    pub async fn create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        validate_id("task", &req.id)?;
        let id = req.id.clone();
        let container = self.reserve(&id)?;
        let created = self.create_reserved(&container, req).await;
        match created {
            Ok(_) => self.shutdown_asked.store(false, Ordering::SeqCst),
            Err(_) => {
                self.forget(&id, &container);
                // A `Shutdown` that came while this `Create` held the table is answered now.
                if self.shutdown_asked.load(Ordering::SeqCst) {
                    self.shutdown().await;
                }
            }
        }
        Ok(api::CreateTaskResponse {
            pid: created? as u32,
            ..Default::default()
        })
    }

    /// A new container in the table under `id`, not created yet (its RPCs answer NotFound).
    fn reserve(&self, id: &str) -> Result<Arc<Container>> {
        let mut table = self.table();
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(format!(
                "this shim is shutting down (its last container was deleted): create task \
                 {id:?} again to get a new one"
            )));
        }
        if table.contains_key(id) {
            return Err(Error::AlreadyExists(format!(
                "task {id:?} already exists in this shim"
            )));
        }
        let container = Arc::new(Container::new(id, self.shared.clone()));
        table.insert(id.to_string(), container.clone());
        Ok(container)
    }

    async fn create_reserved(
        &self,
        container: &Arc<Container>,
        req: api::CreateTaskRequest,
    ) -> Result<i32> {
        let spec = spec::read_spec(Path::new(&req.bundle))?;
        let kind = spec::kind(&spec)?;
        if let Kind::PodMember { sandbox } = &kind {
            self.check_sandbox(sandbox, &req.id).await?;
        }
        let processes = self.model.container(&req, &spec, &kind).await?;
        container.create(req, processes).await
    }

    /// A pod's container needs its sandbox, running, in this shim.
    async fn check_sandbox(&self, sandbox: &str, id: &str) -> Result<()> {
        let Ok(pod) = self.get(sandbox) else {
            return Err(Error::FailedPrecondition(format!(
                "the sandbox {sandbox:?} of container {id:?} is not in this shim: \
                 its shim exited or was killed, or it is in another namespace; \
                 the pod must be created again"
            )));
        };
        if !pod.accepts_members().await {
            return Err(Error::FailedPrecondition(format!(
                "the sandbox {sandbox:?} of container {id:?} has stopped: \
                 the pod must be created again"
            )));
        }
        Ok(())
    }

    /// `Start`: lets the init or an exec process run its program.
    pub async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let pid = self.get(&req.id)?.start(&req.exec_id).await?;
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    /// `State`: where a process is in its life, and how it ended.
    pub async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        self.get(&req.id)?.state(&req.exec_id).await
    }

    /// `Wait`: returns once the process has exited (at once if it already has).
    pub async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let exit = self.get(&req.id)?.wait(&req.exec_id).await?;
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    /// `Kill`: a signal to one process or, with `all`, to every process of the task.
    pub async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let signal = validate_signal(req.signal)?;
        self.get(&req.id)?.kill(&req.exec_id, signal, req.all).await
    }

    /// `Delete`: forgets a stopped process (or cancels one never started); for the init,
    /// the whole task.
    pub async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let container = self.get(&req.id)?;
        let removed = || self.forget(&req.id, &container);
        let (pid, exit) = container.delete(&req.exec_id, removed).await?;
        Ok(delete_response(pid, exit))
    }

    /// `Exec`: spawns another process in the task, held before its program runs.
    pub async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        self.get(&req.id)?.exec(req).await
    }

    /// `Pids`: every live process of the task.
    pub async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let processes = self.get(&req.id)?.pids().await?;
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// `CloseIO`: end-of-file on the process's stdin, once pending input is delivered.
    pub async fn close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let container = self.get(&req.id)?;
        if req.stdin {
            container.close_stdin(&req.exec_id).await?;
        }
        Ok(())
    }

    /// `ResizePty`: the window size of the process's terminal.
    pub async fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        self.get(&req.id)?
            .resize_pty(&req.exec_id, req.width, req.height)
            .await
    }

    /// `Pause` and `Resume`: every process of the task frozen (its cgroup's freezer) or
    /// stopped (SIGSTOP), or going on again.
    pub async fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        self.get(id)?.set_paused(pause).await
    }

    /// `Stats`: CPU, memory and pids of the task (`cgroup/metrics.rs`).
    pub async fn stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        self.get(&req.id)?.stats().await
    }

    /// `Update`: new limits for the task's cgroup (`ctr task update`, the CRI plugin's
    /// UpdateContainerResources). The resources come as the runtime spec's
    /// `LinuxResources`, in JSON.
    pub async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        self.get(&req.id)?.update(&req).await
    }

    /// `Checkpoint`: the task's image, where containerd asks (`task/container.rs`).
    pub async fn checkpoint(&self, req: api::CheckpointTaskRequest) -> Result<()> {
        self.get(&req.id)?.checkpoint(&req).await
    }

    /// `Connect`: the shim's pid and the task's.
    pub async fn connect(&self, req: api::ConnectRequest) -> Result<api::ConnectResponse> {
        let task_pid = self.table().get(&req.id).map_or(0, |c| c.init_pid() as u32);
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
        let table = self.table();
        if !table.is_empty() {
            debug!(
                "shutdown requested while {} containers are left: staying up",
                table.len()
            );
            self.shutdown_asked.store(true, Ordering::SeqCst);
            return;
        }
        self.closing.store(true, Ordering::SeqCst);
        info!("no container left: shutting down");
        self.shutdown.signal();
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
