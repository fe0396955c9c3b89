//! The ttrpc `Task` service: what containerd calls on the shim for each task.
//!
//! The service is `containerd.task.v2.Task` from containerd's
//! [`api/runtime/task/v2/shim.proto`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/task/shim.proto).
//! containerd starts one shim per container, so the shim serves one task: its init process
//! plus, later, exec processes. All state sits behind one async mutex; every RPC and every
//! exit takes it, which also fixes the order of events (`/tasks/start` is published before
//! the exit of the same process can be handled).
//!
//! | RPC | here |
//! |---|---|
//! | Create, Start, State, Wait, Kill, Delete, Pids, CloseIO, Connect, Shutdown | implemented |
//! | Exec, ResizePty, Pause, Resume, Stats, Update, Checkpoint | `Unimplemented`, said plainly |

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use containerd_shim::{
    asynchronous::ExitSignal,
    monitor::{monitor_subscribe, Topic},
    Task, TtrpcContext, TtrpcResult,
};
use containerd_shim_protos::{
    api::{self, Empty, ProcessInfo, Status},
    events::task::TaskIO,
};
use log::{debug, info};
use tokio::sync::Mutex;

use crate::{
    bundle,
    error::{Error, Result},
    events::{timestamp, Publisher},
    exits,
    process::{validate_signal, ExitStatus, InitProcess, State},
    procfs, spec,
    stdio::StdioPaths,
};

/// How long `Delete` waits for the last output to reach the FIFOs.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// The task service handed to the ttrpc server.
pub struct TaskService {
    inner: Arc<Inner>,
}

/// State shared by the RPC handlers and the exit watcher.
pub struct Inner {
    /// The one task of this shim, from `Create` until `Delete`.
    container: Mutex<Option<Container>>,
    /// Where events go.
    events: Publisher,
    /// Fired by `Shutdown` once no task is left: the shim then exits.
    shutdown: Arc<ExitSignal>,
}

/// A task as this shim knows it.
struct Container {
    /// The container id (also the init process's exec id in events).
    id: String,
    /// The bundle directory containerd made for it.
    bundle: PathBuf,
    /// Its init process.
    init: InitProcess,
}

impl TaskService {
    /// Subscribes to exits *before* anything is spawned, then serves.
    pub async fn new(events: Publisher, shutdown: Arc<ExitSignal>) -> Self {
        let inner = Arc::new(Inner {
            container: Mutex::new(None),
            events,
            shutdown,
        });
        match monitor_subscribe(Topic::Pid).await {
            Ok(subscription) => {
                tokio::spawn(exits::watch(inner.clone(), subscription));
            }
            // The crate's monitor cannot fail to subscribe today; if it ever did, the shim
            // could not report exits and must not pretend otherwise.
            Err(err) => panic!("cannot subscribe to process exits: {err}"),
        }
        TaskService { inner }
    }
}

/// Finds the task `id`, refusing exec ids (no exec processes exist yet).
fn find<'a>(slot: &'a mut Option<Container>, id: &str, exec_id: &str) -> Result<&'a mut Container> {
    let container = slot
        .as_mut()
        .filter(|c| c.id == id)
        .ok_or_else(|| Error::NotFound(format!("task {id:?} not found in this shim")))?;
    if !exec_id.is_empty() {
        return Err(Error::NotFound(format!(
            "exec process {exec_id:?} not found in task {id:?}"
        )));
    }
    Ok(container)
}

impl Inner {
    async fn create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        let mut slot = self.container.lock().await;
        if let Some(existing) = slot.as_ref() {
            return Err(Error::AlreadyExists(format!(
                "task {:?} already exists in this shim",
                existing.id
            )));
        }
        if req.id.is_empty() {
            return Err(Error::InvalidArgument("task id is empty".into()));
        }
        if !req.rootfs.is_empty() {
            debug!(
                "{}: ignoring {} rootfs mounts: host processes",
                req.id,
                req.rootfs.len()
            );
        }
        let bundle = PathBuf::from(&req.bundle);
        let process = spec::seed_process(&spec::read_spec(&bundle)?)?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let init = InitProcess::spawn(&process, stdio.clone(), &req.id)?;
        let pid = init.pid;
        if let Err(err) = procfs::ProcStat::read(pid)
            .map_err(Error::io(format!("read /proc/{pid}/stat")))
            .and_then(|stat| bundle::write_init_pid(&bundle, pid, stat.start_time))
        {
            // Leave nothing behind: the helper exits unstarted and the reaper collects it.
            let _ = init.kill(libc::SIGKILL, true);
            return Err(err);
        }
        let io = TaskIO {
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
            ..Default::default()
        };
        self.events.task_create(&req.id, &req.bundle, io, pid).await;
        *slot = Some(Container {
            id: req.id,
            bundle,
            init,
        });
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id, &req.exec_id)?;
        container.init.start()?;
        let pid = container.init.pid;
        info!("{}: started process {pid}", container.id);
        self.events.task_start(&container.id, pid).await;
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id, &req.exec_id)?;
        let init = &container.init;
        let (status, exit) = match init.state() {
            State::Created => (Status::CREATED, None),
            State::Running => (Status::RUNNING, None),
            State::Stopped(exit) => (Status::STOPPED, Some(exit)),
        };
        Ok(api::StateResponse {
            id: container.id.clone(),
            bundle: container.bundle.display().to_string(),
            pid: init.pid as u32,
            status: status.into(),
            stdin: init.stdio.stdin.clone(),
            stdout: init.stdio.stdout.clone(),
            stderr: init.stdio.stderr.clone(),
            terminal: init.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let mut exited = {
            let mut slot = self.container.lock().await;
            find(&mut slot, &req.id, &req.exec_id)?
                .init
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

    async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let signal = validate_signal(req.signal)?;
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id, &req.exec_id)?;
        let pgid = container.init.pid;
        container.init.kill(signal, req.all)?;
        if req.all {
            // Processes that left the task's process group are still the shim's descendants.
            let shim = std::process::id() as i32;
            for process in procfs::descendants(shim).unwrap_or_default() {
                if process.pgid != pgid {
                    // SAFETY: a plain system call.
                    unsafe { libc::kill(process.pid, signal) };
                }
            }
        }
        info!("{}: sent signal {signal} (all: {})", container.id, req.all);
        Ok(())
    }

    async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id, &req.exec_id)?;
        let exit = match container.init.state() {
            State::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "task must be stopped before deletion: task {:?} is running",
                    container.id
                )))
            }
            State::Stopped(exit) => exit,
            State::Created => {
                // Never started: the helper is killed at the gate, nothing ever ran.
                let mut exited = container.init.subscribe_exit();
                container.init.kill(libc::SIGKILL, true)?;
                drop(slot); // the exit watcher needs the lock to record the exit
                let exit = exited.wait_for(Option::is_some).await.ok().and_then(|e| *e);
                slot = self.container.lock().await;
                let _ = find(&mut slot, &req.id, &req.exec_id)?;
                exit.ok_or_else(|| Error::NotFound(format!("task {:?} was deleted", req.id)))?
            }
        };
        let mut container = slot.take().ok_or_else(|| Error::NotFound(req.id.clone()))?;
        container.init.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
        bundle::remove_init_pid(&container.bundle);
        let pid = container.init.pid;
        self.events.task_delete(&container.id, pid, exit).await;
        info!("{}: deleted, exit code {}", container.id, exit.code);
        Ok(delete_response(pid, exit))
    }

    async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let mut slot = self.container.lock().await;
        find(&mut slot, &req.id, "")?;
        // The task is every descendant of the shim: one task per shim, and the subreaper
        // keeps orphans in the tree.
        let shim = std::process::id() as i32;
        let processes = procfs::descendants(shim)
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

    async fn close_io(&self, req: api::CloseIORequest) -> Result<()> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id, &req.exec_id)?;
        if req.stdin {
            container.init.io.close_stdin();
        }
        Ok(())
    }

    async fn connect(&self, _req: api::ConnectRequest) -> Result<api::ConnectResponse> {
        let slot = self.container.lock().await;
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: slot.as_ref().map_or(0, |c| c.init.pid as u32),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self) {
        if self.container.lock().await.is_some() {
            debug!("shutdown requested while a task exists: staying up");
            return;
        }
        info!("no task left: shutting down");
        self.shutdown.signal();
    }

    /// Called by the exit watcher for every reaped process. Only the init process's exit is
    /// reported; other pids are the task's descendants, collected by the reaper.
    pub async fn process_exited(&self, pid: i32, code: i32) {
        let mut slot = self.container.lock().await;
        let Some(container) = slot.as_mut().filter(|c| c.init.pid == pid) else {
            return;
        };
        if let State::Stopped(_) = container.init.state() {
            return;
        }
        exits::kill_leftovers().await;
        let exit = container.init.set_exited(code as u32);
        info!(
            "{}: init process {pid} exited with {}",
            container.id, exit.code
        );
        self.events
            .task_exit(&container.id, &container.id, pid, exit)
            .await;
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

/// The answer for RPCs this shim leaves out. The generated default says "not found", which
/// sends users looking for a missing task; this names the RPC instead.
fn unimplemented<T>(rpc: &str, why: &str) -> TtrpcResult<T> {
    Err(Error::Unimplemented(format!(
        "{rpc} is not implemented by containerd-shim-sample-v2: {why}"
    ))
    .into())
}

/// Logs the RPC's outcome and converts our error into a ttrpc status.
fn reply<T>(rpc: &str, result: Result<T>) -> TtrpcResult<T> {
    match result {
        Ok(value) => {
            debug!("{rpc}: ok");
            Ok(value)
        }
        Err(err) => {
            info!("{rpc}: {err} ({:?})", err.code());
            Err(err.into())
        }
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        reply("Create", self.inner.create(req).await)
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        reply("Start", self.inner.start(req).await)
    }

    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        reply("State", self.inner.state(req).await)
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        reply("Wait", self.inner.wait(req).await)
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        reply("Kill", self.inner.kill(req).await.map(|()| Empty::new()))
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        reply("Delete", self.inner.delete(req).await)
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        reply("Pids", self.inner.pids(req).await)
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        reply(
            "CloseIO",
            self.inner.close_io(req).await.map(|()| Empty::new()),
        )
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        reply("Connect", self.inner.connect(req).await)
    }

    async fn shutdown(&self, _: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.inner.shutdown().await;
        Ok(Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, _: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        unimplemented("Exec", "only the task's init process runs")
    }

    async fn resize_pty(&self, _: &TtrpcContext, _: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        unimplemented("ResizePty", "tasks have no terminal")
    }

    async fn pause(&self, _: &TtrpcContext, _: api::PauseRequest) -> TtrpcResult<Empty> {
        unimplemented("Pause", "tasks cannot be frozen yet")
    }

    async fn resume(&self, _: &TtrpcContext, _: api::ResumeRequest) -> TtrpcResult<Empty> {
        unimplemented("Resume", "tasks cannot be frozen yet")
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        _: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        unimplemented("Stats", "no metrics are collected yet")
    }

    async fn update(&self, _: &TtrpcContext, _: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        unimplemented(
            "Update",
            "host processes have no cgroup resources to update",
        )
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        unimplemented("Checkpoint", "checkpoint/restore (CRIU) is out of scope")
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::ttrpc::{self, Code};

    use super::*;

    #[test]
    fn unimplemented_rpcs_say_so_with_the_right_code() {
        let result: TtrpcResult<Empty> = unimplemented("Pause", "why");
        match result {
            Err(ttrpc::Error::RpcStatus(status)) => {
                assert_eq!(status.code(), Code::UNIMPLEMENTED);
                assert!(status.message().contains("Pause is not implemented"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn find_refuses_other_ids_and_exec_ids() {
        let mut empty: Option<Container> = None;
        assert!(matches!(find(&mut empty, "a", ""), Err(Error::NotFound(_))));
    }
}
