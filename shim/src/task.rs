//! The ttrpc `Task` service: what containerd calls on the shim for each task.
//!
//! The service is `containerd.task.v2.Task` from containerd's
//! [`runtime/v2/task/shim.proto`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/task/shim.proto).
//! containerd starts one shim per container, so the shim serves one task: its init process
//! plus any exec processes (`ctr task exec`), each known by its exec id. All state sits
//! behind one async mutex; every RPC and every exit takes it, which also fixes the order of
//! events (`/tasks/start` is published before the exit of the same process is handled).
//!
//! | RPC | here |
//! |---|---|
//! | Create, Start, State, Wait, Kill, Delete, Pids, CloseIO, Connect, Shutdown | implemented |
//! | Exec, ResizePty, Pause, Resume, Stats | implemented |
//! | Update, Checkpoint | `Unimplemented`, with the reason |

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use containerd_shim::{
    asynchronous::ExitSignal,
    monitor::{monitor_subscribe, Topic},
    Task, TtrpcContext, TtrpcResult,
};
use containerd_shim_protos::{
    api::{self, Empty, ProcessInfo, Status},
    events::task::TaskIO,
    protobuf::{well_known_types::any::Any, Message},
};
use log::{debug, info};
use tokio::sync::Mutex;

use crate::{
    bundle,
    error::{Error, Result},
    events::{timestamp, Publisher},
    exits, metrics,
    process::{validate_signal, ExitStatus, Group, Process, State},
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
    init: Process,
    /// Exec processes by exec id, from `Exec` until their `Delete`.
    execs: HashMap<String, Process>,
    /// Between `Pause` and `Resume`: every process of the task is stopped (SIGSTOP).
    paused: bool,
}

impl Container {
    /// The init process (empty exec id) or an exec process.
    fn process(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs.get_mut(exec_id).ok_or_else(|| {
            Error::NotFound(format!(
                "exec process {exec_id:?} not found in task {:?}",
                self.id
            ))
        })
    }
}

/// Longest id accepted for a task or exec process (containerd's own limit is 76).
pub const MAX_ID_LEN: usize = 76;

/// Checks a task or exec id: it names files and log lines, so no path tricks.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let bad = id.is_empty()
        || id.len() > MAX_ID_LEN
        || id == "."
        || id.contains("..")
        || id.chars().any(|c| c == '/' || c == '\0' || c.is_control());
    if bad {
        return Err(Error::InvalidArgument(format!(
            "invalid {kind} id {id:?}: 1 to {MAX_ID_LEN} characters, no '/', '..' or control characters"
        )));
    }
    Ok(())
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

/// Finds the task `id`.
fn find<'a>(slot: &'a mut Option<Container>, id: &str) -> Result<&'a mut Container> {
    slot.as_mut()
        .filter(|c| c.id == id)
        .ok_or_else(|| Error::NotFound(format!("task {id:?} not found in this shim")))
}

impl Inner {
    async fn create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        validate_id("task", &req.id)?;
        let mut slot = self.container.lock().await;
        if let Some(existing) = slot.as_ref() {
            return Err(Error::AlreadyExists(format!(
                "task {:?} already exists in this shim",
                existing.id
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
        let process = spec::init_process(&spec::read_spec(&bundle)?)?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let init = Process::spawn(&process, stdio.clone(), Group::Own, &req.id)?;
        let pid = init.pid;
        if let Err(err) = procfs::ProcStat::read(pid)
            .map_err(Error::io(format!("read /proc/{pid}/stat")))
            .and_then(|stat| bundle::write_init_pid(&bundle, pid, stat.start_time))
        {
            // Leave nothing behind: the helper exits unstarted and the reaper collects it.
            let _ = init.kill_group(libc::SIGKILL);
            return Err(err);
        }
        let io = TaskIO {
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: process.terminal,
            ..Default::default()
        };
        self.events.task_create(&req.id, &req.bundle, io, pid).await;
        *slot = Some(Container {
            id: req.id,
            bundle,
            init,
            execs: HashMap::new(),
            paused: false,
        });
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id)?;
        let process = container.process(&req.exec_id)?;
        process.start()?;
        let pid = process.pid;
        info!("{}: started process {pid} {:?}", container.id, req.exec_id);
        if req.exec_id.is_empty() {
            self.events.task_start(&container.id, pid).await;
        } else {
            self.events
                .exec_started(&container.id, &req.exec_id, pid)
                .await;
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id)?;
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

    async fn wait(&self, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let mut exited = {
            let mut slot = self.container.lock().await;
            find(&mut slot, &req.id)?
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

    async fn kill(&self, req: api::KillRequest) -> Result<()> {
        let signal = validate_signal(req.signal)?;
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id)?;
        let pgid = container.init.pid;
        let all = req.all && req.exec_id.is_empty();
        let process = container.process(&req.exec_id)?;
        if !all {
            process.kill(signal)?;
        } else {
            process.kill_group(signal)?;
            // Processes that left the task's process group are still the shim's descendants.
            let shim = std::process::id() as i32;
            for process in procfs::descendants(shim).unwrap_or_default() {
                if process.pgid != pgid {
                    // SAFETY: a plain system call.
                    unsafe { libc::kill(process.pid, signal) };
                }
            }
        }
        info!(
            "{}: sent signal {signal} to {:?} (all: {all})",
            container.id, req.exec_id
        );
        Ok(())
    }

    async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut slot = self.container.lock().await;
        let process = find(&mut slot, &req.id)?.process(&req.exec_id)?;
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
                drop(slot); // the exit watcher needs the lock to record the exit
                let exit = exited.wait_for(Option::is_some).await.ok().and_then(|e| *e);
                slot = self.container.lock().await;
                find(&mut slot, &req.id)?.process(&req.exec_id)?;
                exit.ok_or_else(|| Error::NotFound(format!("task {:?} was deleted", req.id)))?
            }
        };
        let container = find(&mut slot, &req.id)?;
        if !req.exec_id.is_empty() {
            if let Some(mut exec) = container.execs.remove(&req.exec_id) {
                // Not under the lock: an exec's background children may hold its output
                // open until the drain limit, and nothing else should wait for that.
                drop(slot);
                exec.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
                info!(
                    "{}: deleted exec {:?}, exit code {}",
                    req.id, req.exec_id, exit.code
                );
                return Ok(delete_response(exec.pid, exit));
            }
        }
        let mut container = slot.take().ok_or_else(|| Error::NotFound(req.id.clone()))?;
        container.init.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
        bundle::remove_init_pid(&container.bundle);
        let pid = container.init.pid;
        self.events.task_delete(&container.id, pid, exit).await;
        info!("{}: deleted, exit code {}", container.id, exit.code);
        Ok(delete_response(pid, exit))
    }

    async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        validate_id("exec", &req.exec_id)?;
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, &req.id)?;
        if container.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec process {:?} already exists in task {:?}",
                req.exec_id, req.id
            )));
        }
        if !matches!(container.init.state(), State::Running) {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {:?}: its init process is not running",
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
        let exec = Process::spawn(&process, stdio, Group::Join(container.init.pid), &label)?;
        container.execs.insert(req.exec_id.clone(), exec);
        self.events.exec_added(&req.id, &req.exec_id).await;
        Ok(())
    }

    async fn pids(&self, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let mut slot = self.container.lock().await;
        find(&mut slot, &req.id)?;
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
        let process = find(&mut slot, &req.id)?.process(&req.exec_id)?;
        if req.stdin {
            process.io.close_stdin();
        }
        Ok(())
    }

    async fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<()> {
        let mut slot = self.container.lock().await;
        let process = find(&mut slot, &req.id)?.process(&req.exec_id)?;
        process.io.resize(req.width, req.height)
    }

    /// `Pause` and `Resume`: SIGSTOP or SIGCONT to every process of the task. (A runc
    /// shim freezes the container's cgroup; host processes have none.)
    async fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        let mut slot = self.container.lock().await;
        let container = find(&mut slot, id)?;
        if !matches!(container.init.state(), State::Running) {
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
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        container.init.kill_group(signal)?;
        let shim = std::process::id() as i32;
        for process in procfs::descendants(shim).unwrap_or_default() {
            // SAFETY: a plain system call on a descendant (see `kill`).
            unsafe { libc::kill(process.pid, signal) };
        }
        container.paused = pause;
        if pause {
            self.events.task_paused(id).await;
        } else {
            self.events.task_resumed(id).await;
        }
        Ok(())
    }

    async fn stats(&self, req: api::StatsRequest) -> Result<api::StatsResponse> {
        let mut slot = self.container.lock().await;
        find(&mut slot, &req.id)?;
        let metrics = metrics::collect().map_err(Error::io("read the task's metrics"))?;
        let value = metrics
            .write_to_bytes()
            .map_err(|e| Error::io("encode metrics")(std::io::Error::other(e)))?;
        Ok(api::StatsResponse {
            stats: Some(Any {
                type_url: metrics::METRICS_TYPE_URL.into(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
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

    /// True while `pid` is the task's init process and has not been reported exited.
    pub async fn is_live_init(&self, pid: i32) -> bool {
        let slot = self.container.lock().await;
        slot.as_ref()
            .is_some_and(|c| c.init.pid == pid && !matches!(c.init.state(), State::Stopped(_)))
    }

    /// True while an exec process of the task has not been reported exited.
    pub async fn has_live_execs(&self) -> bool {
        let slot = self.container.lock().await;
        slot.as_ref().is_some_and(|c| {
            c.execs
                .values()
                .any(|exec| !matches!(exec.state(), State::Stopped(_)))
        })
    }

    /// Called by the exit watcher for every reaped process: the init or an exec records
    /// its exit and `/tasks/exit` goes out. Other pids are the task's descendants, collected
    /// by the reaper and reported by nobody.
    pub async fn process_exited(&self, pid: i32, code: i32) {
        let mut slot = self.container.lock().await;
        let Some(container) = slot.as_mut() else {
            return;
        };
        let exec_id = if container.init.pid == pid {
            String::new()
        } else if let Some((exec_id, _)) = container.execs.iter().find(|(_, p)| p.pid == pid) {
            exec_id.clone()
        } else {
            return;
        };
        let Ok(process) = container.process(&exec_id) else {
            return;
        };
        if let State::Stopped(_) = process.state() {
            return;
        }
        let exit = process.set_exited(code as u32);
        if exec_id.is_empty() {
            container.paused = false;
        }
        let reported_id = if exec_id.is_empty() {
            container.id.clone()
        } else {
            exec_id
        };
        info!(
            "{}: process {pid} ({reported_id}) exited with {}",
            container.id, exit.code
        );
        self.events
            .task_exit(&container.id, &reported_id, pid, exit)
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

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        reply("Exec", self.inner.exec(req).await.map(|()| Empty::new()))
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        reply(
            "ResizePty",
            self.inner.resize_pty(req).await.map(|()| Empty::new()),
        )
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        reply(
            "Pause",
            self.inner
                .set_paused(&req.id, true)
                .await
                .map(|()| Empty::new()),
        )
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        reply(
            "Resume",
            self.inner
                .set_paused(&req.id, false)
                .await
                .map(|()| Empty::new()),
        )
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        reply("Stats", self.inner.stats(req).await)
    }

    async fn update(&self, _: &TtrpcContext, _: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        unimplemented(
            "Update",
            "host processes have no cgroup whose resources could be updated",
        )
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        unimplemented(
            "Checkpoint",
            "checkpointing needs CRIU and a container to freeze; this shim runs plain host processes",
        )
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
    fn find_refuses_unknown_tasks() {
        let mut empty: Option<Container> = None;
        assert!(matches!(find(&mut empty, "a"), Err(Error::NotFound(_))));
    }

    #[test]
    fn ids_with_path_tricks_or_too_long_are_refused() {
        for good in ["shim-test", "exec-1", "a.b_c", &"x".repeat(MAX_ID_LEN)] {
            assert!(validate_id("exec", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\0b",
            "a\nb",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(
                matches!(validate_id("exec", bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
