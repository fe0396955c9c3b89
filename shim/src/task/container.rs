//! A container (a *task*, in containerd's API): its init and exec processes, its process
//! model's [`Instance`], and everything that happens to it, under a lock of its own.
//!
//! The init process is the one `Create` made from the bundle's spec; its exec id is empty in
//! requests, and it is reported under the container's own id in events. Exec processes
//! (`ctr task exec --exec-id ID`) are added by `Exec`, each with an id of its own, and live
//! until their own `Delete`.
//!
//! **One lock per container orders its events.** Every RPC on the container takes it, and
//! so does its exit policy ([`Container::process_exited`]), which runs in a task of the
//! container's own, fed by the exit router (`task/exits.rs`). Events are published under it:
//! `/tasks/start` before the `/tasks/exit` of the same process, an exec's `/tasks/exit`
//! before its task's. Another container's lock is never taken, so a slow operation here
//! (a logger that is never ready, leftovers that take time to die, a cgroup that will not
//! freeze) delays this container's RPCs only. See "Concurrency" in docs/ARCHITECTURE.md.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicI32, Ordering},
        Arc,
    },
    time::Duration,
};

use containerd_shim_protos::{
    api::{self, ProcessInfo, Status},
    protobuf::Message,
    shim::oci::CheckpointOptions,
};
use log::{info, warn};
use tokio::sync::{
    mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
    Mutex, MutexGuard, Notify,
};

use crate::{
    cgroup::oom::OomWatch,
    error::{Error, Result},
    model::host::members::Registry,
    model::{Instance, Made, MakeAtStart, Member},
    stdio::logs::LogContext,
    stdio::{self, StdioPaths},
    sys::Signal,
    task::events::{timestamp, EventSink, TaskEvent},
    task::exits::{Reaped, Router, LEFTOVER_DEADLINE},
    task::process::{ExitStatus, Process, State},
};

/// Longest id accepted for a task, an exec process or a namespace (containerd's limit is 76).
pub const MAX_ID_LEN: usize = 76;

/// How long `Delete` waits for the last output to reach the FIFOs.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long an exit waits for the process's output to reach, and leave, its FIFOs before
/// it is recorded (`Io::flushed`): a reader that stops reading costs an exit this much.
const EXIT_FLUSH_LIMIT: Duration = Duration::from_millis(500);

/// Checks a task, exec or namespace id: it names files and log lines, so no path tricks.
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

/// What every container of a shim shares.
pub struct Shared {
    /// Where events go: containerd in the shim, a recorder in tests.
    pub events: Box<dyn EventSink>,
    /// From the reaper to the container whose process exited.
    pub router: Arc<Router>,
    /// Who runs what among the shim's descendants; loggers register their groups here.
    pub registry: Arc<Registry>,
    /// The containerd namespace of the shim's containers (`-namespace`), for loggers.
    pub namespace: String,
}

impl Shared {
    /// Who a logger of process `id` (a container's init, or an exec) logs for (`stdio/logs.rs`).
    fn log_context(&self, id: &str) -> LogContext {
        LogContext {
            container_id: id.to_string(),
            namespace: self.namespace.clone(),
        }
    }
}

/// A container, from `Create` until `Delete`.
pub struct Container {
    /// The container id.
    id: String,
    /// What the shim's containers share.
    shared: Arc<Shared>,
    /// Its state: `None` until `Create` is done, and again once `Delete` took it.
    state: Mutex<Option<Inner>>,
    /// Where the router sends the exits of its processes.
    exits: UnboundedSender<Reaped>,
    /// The receiving end, until `Create` hands it to the container's exit task.
    exits_rx: std::sync::Mutex<Option<UnboundedReceiver<Reaped>>>,
    /// The init's pid, readable without the lock (`Connect`).
    init_pid: AtomicI32,
    /// The exit task, stopped at `Delete`.
    task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    /// Wakes a `Delete` waiting for an exec's start to end.
    start_ended: Notify,
}

/// A created container's state, behind its lock.
struct Inner {
    /// The bundle directory containerd made for it.
    bundle: PathBuf,
    /// Its init process.
    init: Process,
    /// Exec processes by exec id, from `Exec` until their `Delete`.
    execs: HashMap<String, Process>,
    /// The making of the execs their model makes at `Start` ([`Made::AtStart`]), until
    /// then.
    at_start: HashMap<String, MakeAtStart>,
    /// The execs whose `Start` is making them, out of the lock.
    starting: HashSet<String>,
    /// The init's exit, while an exec is starting: recorded once no exec is.
    held_init_exit: Option<Reaped>,
    /// Between `Pause` and `Resume`.
    paused: bool,
    /// The OOM kills already published as `/tasks/oom`.
    oom_kills: u64,
    /// How its processes run: its process model's part.
    processes: Box<dyn Instance>,
}

impl Container {
    /// A container about to be created, known by `id`.
    pub fn new(id: &str, shared: Arc<Shared>) -> Container {
        let (exits, exits_rx) = unbounded_channel();
        Container {
            id: id.to_string(),
            shared,
            state: Mutex::new(None),
            exits,
            exits_rx: std::sync::Mutex::new(Some(exits_rx)),
            init_pid: AtomicI32::new(0),
            task: std::sync::Mutex::new(None),
            start_ended: Notify::new(),
        }
    }

    /// The init's pid, 0 before `Create`.
    pub fn init_pid(&self) -> i32 {
        self.init_pid.load(Ordering::Relaxed)
    }

    /// Its state, or NotFound before `Create` is done and after `Delete`.
    async fn lock(&self) -> Result<MutexGuard<'_, Option<Inner>>> {
        let state = self.state.lock().await;
        match *state {
            Some(_) => Ok(state),
            None => Err(self.not_found()),
        }
    }

    fn not_found(&self) -> Error {
        Error::NotFound(format!("task {:?} not found in this shim", self.id))
    }

    /// Locks the container, after waiting out a process that has exited but whose exit is
    /// not recorded yet (the reaper has it; the exit policy is about to run). An answer
    /// given in between would say RUNNING for a process that is gone.
    async fn lock_settled(&self, exec_id: &str) -> Result<MutexGuard<'_, Option<Inner>>> {
        let mut state = self.lock().await?;
        let inner = inner(&mut state)?;
        if exec_id.is_empty() && !inner.starting.is_empty() {
            // An exit of the init is held until the exec starts under way end: none is
            // about to be recorded.
            return Ok(state);
        }
        let process = inner.process(&self.id, exec_id)?;
        if !process.exit_pending() {
            return Ok(state);
        }
        let mut exited = process.subscribe_exit();
        drop(state);
        // The exit policy takes at most two LEFTOVER_DEADLINEs; should an exit ever go
        // missing, answer from the state as it is rather than hang the RPC.
        let limit = 2 * LEFTOVER_DEADLINE + Duration::from_secs(1);
        if tokio::time::timeout(limit, exited.wait_for(Option::is_some))
            .await
            .is_err()
        {
            warn!(
                "{} {exec_id:?}: exited, but no exit recorded after {limit:?}",
                self.id
            );
        }
        self.lock().await
    }

    /// `Create`: opens the init's stdio (awaiting a logger's readiness), has `processes`
    /// make the init, held before its program runs, and starts the container's exit task.
    /// On failure, `processes` releases what it made.
    pub async fn create(
        self: &Arc<Self>,
        req: api::CreateTaskRequest,
        mut processes: Box<dyn Instance>,
    ) -> Result<i32> {
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: processes.init_terminal(),
        };
        let log = self.shared.log_context(&self.id);
        let pty = processes.pty_maker();
        // Open before the process is made: its exit, however early, is matched in it.
        let window = self.shared.router.window();
        let made = async {
            let (child, pending) = stdio::open(&stdio, pty, &log, &self.shared.registry).await?;
            Ok::<_, Error>((processes.create(child).await?, pending))
        };
        let (made, pending) = match made.await {
            Ok(made) => made,
            Err(err) => {
                processes.release().await;
                return Err(err);
            }
        };
        let mut io = pending.start(&self.id);
        let mut at_start = HashMap::new();
        let (pid, pidfd) = match made {
            Made::Held(mut spawned) => {
                // An exit the reaper saw meanwhile is kept for it (`exits::Router`).
                let pidfd =
                    self.shared
                        .router
                        .add(spawned.pid, spawned.pidfd.take(), &self.exits, &window);
                if let Some(master) = spawned.terminal.take() {
                    if let Err(err) = io.attach_terminal(master) {
                        warn!("{}: {err}", self.id);
                    }
                }
                (spawned.pid, pidfd)
            }
            // A restore from a checkpoint: the init comes at `Start`.
            Made::AtStart(make) => {
                at_start.insert(String::new(), make);
                (0, None)
            }
        };
        drop(window);
        let init = Process::new(pid, pidfd, stdio, io);
        let pid = init.pid;
        self.init_pid.store(pid, Ordering::Relaxed);
        self.shared
            .events
            .publish(TaskEvent::Create {
                id: self.id.clone(),
                bundle: req.bundle.clone(),
                stdio: init.stdio.clone(),
                pid,
            })
            .await;
        // Kills counted before (a cgroup left by an earlier task of the same path) are not
        // this task's.
        let oom_kills = processes.oom_kills().unwrap_or(0);
        let ooms = processes.watch_ooms();
        *self.state.lock().await = Some(Inner {
            bundle: PathBuf::from(req.bundle),
            init,
            execs: HashMap::new(),
            at_start,
            starting: HashSet::new(),
            held_init_exit: None,
            paused: false,
            oom_kills,
            processes,
        });
        let exits = self.exits_rx.lock().ok().and_then(|mut rx| rx.take());
        if let Some(exits) = exits {
            let task = tokio::spawn(self.clone().run(exits, ooms));
            if let Ok(mut slot) = self.task.lock() {
                *slot = Some(task.abort_handle());
            }
        }
        Ok(pid)
    }

    /// The container's own task: its exits, through the exit policy, and its OOM
    /// notifications, until `Delete` stops it.
    async fn run(
        self: Arc<Self>,
        mut exits: UnboundedReceiver<Reaped>,
        mut ooms: Option<OomWatch>,
    ) {
        enum Wake {
            Exit(Option<Reaped>),
            Oom(bool),
        }
        loop {
            let oom = async {
                match ooms.as_mut() {
                    Some(watch) => watch.notified().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                reaped = exits.recv() => Wake::Exit(reaped),
                ok = oom => Wake::Oom(ok),
            };
            match wake {
                Wake::Exit(Some(reaped)) => self.process_exited(reaped, &mut exits).await,
                Wake::Exit(None) => return,
                Wake::Oom(true) => {
                    if let Ok(mut state) = self.lock().await {
                        if let Ok(inner) = inner(&mut state) {
                            self.check_oom(inner).await;
                        }
                    }
                }
                // The cgroup is gone: no more notifications.
                Wake::Oom(false) => ooms = None,
            }
        }
    }

    /// The exit policy, all of it, under one acquisition of the container's lock.
    ///
    /// - An exec process: its exit is recorded (waking its `Wait`s) and `/tasks/exit` goes
    ///   out.
    /// - The init process: the task is over. What is left of it is ended first
    ///   ([`Instance::init_exited`]), then the exits of the exec processes are reported,
    ///   those on their way for at most [`LEFTOVER_DEADLINE`], so that an exec's
    ///   `/tasks/exit` never follows its task's. Then the init's exit.
    ///
    /// The lock is held throughout, so no RPC on this container sees it half-way through;
    /// other containers are not concerned. Before the policy runs (the process has exited,
    /// the exit is on its way from the reaper), the RPCs see it too, through the process's
    /// pidfd ([`Process::exit_pending`]): `State` and `Delete` wait for the exit to be
    /// recorded, then answer STOPPED with its code; `Exec` and `Pause` are refused
    /// (FailedPrecondition); `Kill` finds the process finished (NotFound). From the moment
    /// the init exits, the three agree it stopped, as containerd's runc shim answers once
    /// its init exited.
    ///
    /// One exception, runc-v2's: while an exec is being made by its `Start` (out of the
    /// lock, [`Made::AtStart`]), the init's exit is held, and recorded once no exec is
    /// starting. Meanwhile the init answers RUNNING, an `Exec` is accepted and its `Start`
    /// refused; the exec that did start is ended with the rest, and reported first.
    pub async fn process_exited(&self, reaped: Reaped, exits: &mut UnboundedReceiver<Reaped>) {
        let mut state = self.state.lock().await;
        let Ok(inner) = inner(&mut state) else {
            return;
        };
        let Some(member) = inner.live_member(reaped.pid) else {
            return;
        };
        if member == Member::Init {
            if !inner.starting.is_empty() {
                info!(
                    "{}: the init exited; its exit waits for exec starts",
                    self.id
                );
                inner.held_init_exit = Some(reaped);
                return;
            }
            if inner.paused {
                // Frozen processes would not die (v1) until thawed.
                inner.processes.thaw();
            }
            inner.processes.init_exited().await;
            let deadline = tokio::time::Instant::now() + LEFTOVER_DEADLINE;
            while inner.has_live_execs() {
                match tokio::time::timeout_at(deadline, exits.recv()).await {
                    Ok(Some(exec)) => {
                        if let Some(exec_member @ Member::Exec(_)) = inner.live_member(exec.pid) {
                            self.record_exit(inner, &exec_member, exec.code).await;
                        }
                    }
                    _ => {
                        warn!("an exec process outlived its init by {LEFTOVER_DEADLINE:?}");
                        break;
                    }
                }
            }
        }
        self.record_exit(inner, &member, reaped.code).await;
    }

    /// Records one process's exit and publishes `/tasks/exit`, after the `/tasks/oom` of
    /// an OOM kill not reported yet (the kill may well be this one).
    async fn record_exit(&self, inner: &mut Inner, member: &Member, code: i32) {
        self.check_oom(inner).await;
        let (process, reported_id) = match member {
            Member::Init => (&mut inner.init, self.id.clone()),
            Member::Exec(exec_id) => match inner.execs.get_mut(exec_id) {
                Some(exec) => (exec, exec_id.clone()),
                None => return,
            },
        };
        // Everything it wrote reaches the client before the client learns it exited.
        process.io.flushed(EXIT_FLUSH_LIMIT).await;
        let exit = process.set_exited(code as u32);
        let pid = process.pid;
        inner.processes.exit_recorded(pid);
        if *member == Member::Init {
            inner.paused = false;
        }
        info!(
            "{}: process {pid} ({reported_id}) exited with {}",
            self.id, exit.code
        );
        self.shared
            .events
            .publish(TaskEvent::Exit {
                id: self.id.clone(),
                exec_id: reported_id,
                pid,
                exit,
            })
            .await;
    }

    /// Publishes one `/tasks/oom` when the container counts more OOM kills than already
    /// reported.
    async fn check_oom(&self, inner: &mut Inner) {
        let Some(kills) = inner.processes.oom_kills() else {
            return;
        };
        if kills > inner.oom_kills {
            inner.oom_kills = kills;
            warn!("{}: the OOM killer killed a process of the task", self.id);
            self.shared
                .events
                .publish(TaskEvent::Oom {
                    id: self.id.clone(),
                })
                .await;
        }
    }

    /// Whether a pod's container may join this sandbox: its init runs.
    pub async fn accepts_members(&self) -> bool {
        match self.lock().await {
            Ok(mut state) => inner(&mut state)
                .is_ok_and(|inner| inner.is_running() && !inner.init.exit_pending()),
            Err(_) => false,
        }
    }

    /// `Start`: lets the init or an exec process run its program, or makes an exec its
    /// model makes only now ([`Made::AtStart`]), out of the lock.
    pub async fn start(&self, exec_id: &str) -> Result<i32> {
        let mut state = self.lock().await?;
        let inner = inner(&mut state)?;
        let pid = {
            let process = inner.process(&self.id, exec_id)?;
            process.ensure_created()?;
            process.pid
        };
        if inner.starting.contains(exec_id) {
            return Err(Error::FailedPrecondition(format!(
                "process {exec_id:?} of task {:?} is being started already",
                self.id
            )));
        }
        if !exec_id.is_empty() {
            // As runc-v2: once the init has exited, no exec starts (the exit is recorded,
            // or on its way, or held until another exec's start ends).
            if inner.init.is_stopped() || inner.init.exit_pending() {
                return Err(Error::FailedPrecondition(format!(
                    "cannot start exec {exec_id:?}: the init process of task {:?} is not running",
                    self.id
                )));
            }
        }
        if let Some(make) = inner.at_start.remove(exec_id) {
            return self.start_made_now(state, exec_id, make).await;
        }
        if pid == 0 {
            return Err(Error::FailedPrecondition(format!(
                "process {exec_id:?} of task {:?} failed to start already; delete it",
                self.id
            )));
        }
        inner.processes.start(&member_of(exec_id), pid).await?;
        let process = inner.process(&self.id, exec_id)?;
        process.set_running();
        self.started(process, exec_id).await
    }

    /// The end of a `Start` once the process runs: logged, and published.
    async fn started(&self, process: &Process, exec_id: &str) -> Result<i32> {
        let pid = process.pid;
        info!("{}: started process {pid} {exec_id:?}", self.id);
        let event = if exec_id.is_empty() {
            TaskEvent::Start {
                id: self.id.clone(),
                pid,
            }
        } else {
            TaskEvent::ExecStarted {
                id: self.id.clone(),
                exec_id: exec_id.to_string(),
                pid,
            }
        };
        self.shared.events.publish(event).await;
        Ok(pid)
    }

    /// `Start` of an exec its model makes now: `make` runs without the lock, so `State`,
    /// `Kill`, `Exec` and the rest go on meanwhile. Until it ends, the exec is `starting`
    /// (CREATED to `State`; `Delete` waits) and an exit of the init is held, not recorded:
    /// as with runc-v2, the init's exit comes after the end of every exec start, and an
    /// exec that did start then ends before the init's exit is reported.
    async fn start_made_now(
        &self,
        mut state: MutexGuard<'_, Option<Inner>>,
        exec_id: &str,
        make: MakeAtStart,
    ) -> Result<i32> {
        inner(&mut state)?.starting.insert(exec_id.to_string());
        // Open before the process is made: its exit, however early, is matched in it.
        let window = self.shared.router.window();
        drop(state);
        let made = make.await;
        let mut state = self.state.lock().await;
        // The container cannot go meanwhile: its init is not stopped while an exec starts.
        let inner = inner(&mut state)?;
        inner.starting.remove(exec_id);
        self.start_ended.notify_waiters();
        if inner.starting.is_empty() {
            if let Some(exit) = inner.held_init_exit.take() {
                // Back to the exit policy, after the exits already queued (this exec's, if
                // it is gone already).
                let _ = self.exits.send(exit);
            }
        }
        let mut spawned = made?;
        // An exit the reaper saw meanwhile is kept for it (`exits::Router`).
        let pidfd = self
            .shared
            .router
            .add(spawned.pid, spawned.pidfd.take(), &self.exits, &window);
        drop(window);
        inner.processes.started(&member_of(exec_id), spawned.pid);
        if exec_id.is_empty() {
            self.init_pid.store(spawned.pid, Ordering::Relaxed);
        }
        let process = inner.process(&self.id, exec_id)?;
        process.made(spawned.pid, pidfd);
        if let Some(master) = spawned.terminal.take() {
            process.io.attach_terminal(master)?;
        }
        process.set_running();
        self.started(process, exec_id).await
    }

    /// `State`: where a process is in its life, and how it ended.
    pub async fn state(&self, exec_id: &str) -> Result<api::StateResponse> {
        let mut state = self.lock_settled(exec_id).await?;
        let inner = inner(&mut state)?;
        let (bundle, paused) = (inner.bundle.display().to_string(), inner.paused);
        let process = inner.process(&self.id, exec_id)?;
        let (status, exit) = match process.state() {
            State::Created => (Status::CREATED, None),
            State::Running if paused => (Status::PAUSED, None),
            State::Running => (Status::RUNNING, None),
            State::Stopped(exit) => (Status::STOPPED, Some(exit)),
        };
        Ok(api::StateResponse {
            id: self.id.clone(),
            bundle,
            pid: process.pid as u32,
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        })
    }

    /// `Wait`: the exit of a process, once it happened (at once if it already has).
    pub async fn wait(&self, exec_id: &str) -> Result<ExitStatus> {
        let mut exited = {
            let mut state = self.lock().await?;
            inner(&mut state)?
                .process(&self.id, exec_id)?
                .subscribe_exit()
        };
        // Returns at once if the process already exited: the channel keeps the last value.
        exited
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|exit| *exit)
            .ok_or_else(|| Error::NotFound(format!("task {:?} was deleted", self.id)))
    }

    /// `Kill`: a signal to one process or, with `all` (for the init), to every process of
    /// the container.
    pub async fn kill(&self, exec_id: &str, signal: Signal, all: bool) -> Result<()> {
        let mut state = self.lock().await?;
        let inner = inner(&mut state)?;
        let all = all && exec_id.is_empty();
        let process = inner.process(&self.id, exec_id)?;
        if all {
            process.ensure_alive()?;
            inner.processes.signal_all(signal).await?;
        } else {
            process.kill(signal)?;
        }
        // A frozen process dies of SIGKILL only once thawed (cgroup v1): killing a paused
        // task's init, or all of it, thaws it. It is not resumed: it ends.
        if inner.paused && signal == Signal::KILL && exec_id.is_empty() {
            inner.processes.thaw();
        }
        info!(
            "{}: sent signal {} to {exec_id:?} (all: {all})",
            self.id,
            signal.number()
        );
        Ok(())
    }

    /// `Delete`: forgets a stopped process (or cancels one never started); for the init,
    /// the whole container, and then `removed` is called (the service takes it out of its
    /// table, once all is done and published). Returns the pid and exit of the process.
    pub async fn delete(&self, exec_id: &str, removed: impl FnOnce()) -> Result<(i32, ExitStatus)> {
        let (mut state, exit) = self.stopped(exec_id).await?;
        if !exec_id.is_empty() {
            let exec = inner(&mut state)?.execs.remove(exec_id);
            if let Some(mut exec) = exec {
                // Not under the lock: an exec's background children may hold its output
                // open until the drain limit, and nothing else should wait for that.
                drop(state);
                exec.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
                info!(
                    "{}: deleted exec {exec_id:?}, exit code {}",
                    self.id, exit.code
                );
                return Ok((exec.pid, exit));
            }
        }
        let Some(inner) = state.take() else {
            return Err(self.not_found());
        };
        drop(state);
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
        let pid = self.finish(inner, exit).await;
        removed();
        Ok((pid, exit))
    }

    /// The lock, once process `exec_id` has stopped, and how it ended. A process never
    /// started is killed where it waits (nothing ever ran); a running one is refused.
    async fn stopped(&self, exec_id: &str) -> Result<(MutexGuard<'_, Option<Inner>>, ExitStatus)> {
        let mut state = self.lock_settled(exec_id).await?;
        while inner(&mut state)?.starting.contains(exec_id) {
            // Being made out of the lock: its start ends first, whichever way.
            let ended = self.start_ended.notified();
            drop(state);
            ended.await;
            state = self.lock_settled(exec_id).await?;
        }
        let process = inner(&mut state)?.process(&self.id, exec_id)?;
        match process.state() {
            State::Stopped(exit) => return Ok((state, exit)),
            State::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "task must be stopped before deletion: process {} of {:?} is running",
                    process.pid, self.id
                )))
            }
            State::Created => {}
        }
        if !process.exists() {
            // An exec its model makes at `Start`: nothing ran, nothing to kill or reap, and
            // it ends with the status 0 runc-v2 reports for it.
            let exit = process.set_exited(0);
            inner(&mut state)?.at_start.remove(exec_id);
            return Ok((state, exit));
        }
        let mut exited = process.subscribe_exit();
        match process.kill(Signal::KILL) {
            // Already gone: its exit is recorded, or on its way.
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
        let pid = process.pid;
        inner(&mut state)?
            .processes
            .cancel(&member_of(exec_id), pid);
        drop(state); // the exit policy needs the lock to record the exit
        let exit = exited.wait_for(Option::is_some).await.ok().and_then(|e| *e);
        let mut state = self.lock().await?;
        inner(&mut state)?.process(&self.id, exec_id)?;
        let exit =
            exit.ok_or_else(|| Error::NotFound(format!("task {:?} was deleted", self.id)))?;
        Ok((state, exit))
    }

    /// The end of a deleted container, out of its lock (nothing else can happen to it):
    /// its output drained, what it held released, `/tasks/delete` published.
    async fn finish(&self, mut inner: Inner, exit: ExitStatus) -> i32 {
        inner.init.io.wait_outputs(OUTPUT_DRAIN_LIMIT).await;
        inner.processes.release().await;
        let pid = inner.init.pid;
        self.shared
            .events
            .publish(TaskEvent::Delete {
                id: self.id.clone(),
                pid,
                exit,
            })
            .await;
        info!("{}: deleted, exit code {}", self.id, exit.code);
        pid
    }

    /// `Exec`: another process in the container, held before its program runs.
    pub async fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        validate_id("exec", &req.exec_id)?;
        let mut state = self.lock().await?;
        let inner = inner(&mut state)?;
        if inner.execs.contains_key(&req.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec process {:?} already exists in task {:?}",
                req.exec_id, self.id
            )));
        }
        if !matches!(inner.init.state(), State::Running) || inner.init_exit_unheld() {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {:?}: its init process is not running",
                self.id
            )));
        }
        if inner.paused {
            // It would start frozen (or stopped), and could not be cancelled until resumed.
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {:?}: it is paused; resume it first",
                self.id
            )));
        }
        let mut process: oci_spec::runtime::Process = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec request without a process spec".into()))
            .and_then(|any| {
                serde_json::from_slice(&any.value)
                    .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))
            })?;
        // The request says whether the exec has a terminal, whatever its spec says (a
        // client's terminal I/O on the container's own process spec), as for runc-v2.
        process.set_terminal(Some(req.terminal));
        inner.processes.check_exec(&process)?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let label = format!("{} exec {}", self.id, req.exec_id);
        // An exec's logger logs for the exec, as with containerd's runc shim.
        let log = self.shared.log_context(&req.exec_id);
        let pty = inner.processes.pty_maker();
        let (child, pending) = stdio::open(&stdio, pty, &log, &self.shared.registry).await?;
        // A logger may have taken its time: the init may have exited meanwhile.
        if inner.init.is_stopped() || inner.init_exit_unheld() {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in task {:?}: its init process exited",
                self.id
            )));
        }
        let window = self.shared.router.window();
        let (pid, pidfd) = match inner.processes.exec(&req.exec_id, &process, child).await? {
            // An exit the reaper saw meanwhile is kept for it (`exits::Router`).
            Made::Held(spawned) => {
                let pidfd =
                    self.shared
                        .router
                        .add(spawned.pid, spawned.pidfd, &self.exits, &window);
                (spawned.pid, pidfd)
            }
            Made::AtStart(make) => {
                inner.at_start.insert(req.exec_id.clone(), make);
                (0, None)
            }
        };
        drop(window);
        let exec = Process::new(pid, pidfd, stdio, pending.start(&label));
        inner.execs.insert(req.exec_id.clone(), exec);
        self.shared
            .events
            .publish(TaskEvent::ExecAdded {
                id: self.id.clone(),
                exec_id: req.exec_id,
            })
            .await;
        Ok(())
    }

    /// `Checkpoint`: the running container's image, written by its model into `path` (or
    /// the options' `image_path`), as runc-v2's `CheckpointOptions` ask; with `exit`, the
    /// container's processes end, and their exits come as any other.
    pub async fn checkpoint(&self, req: &api::CheckpointTaskRequest) -> Result<()> {
        let options = match req.options.as_ref() {
            Some(any) if !any.value.is_empty() || !any.type_url.is_empty() => {
                if !any
                    .type_url
                    .ends_with("containerd.runc.v1.CheckpointOptions")
                {
                    return Err(Error::InvalidArgument(format!(
                        "checkpoint options of type {:?}: only runc-v2's \
                         containerd.runc.v1.CheckpointOptions are understood",
                        any.type_url
                    )));
                }
                CheckpointOptions::parse_from_bytes(&any.value)
                    .map_err(|e| Error::InvalidArgument(format!("checkpoint options: {e}")))?
            }
            _ => CheckpointOptions::default(),
        };
        let path = match options.image_path.as_str() {
            "" => PathBuf::from(&req.path),
            said => PathBuf::from(said),
        };
        if path.as_os_str().is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint without a path for its image".into(),
            ));
        }
        let mut state = self.lock_settled("").await?;
        let inner = inner(&mut state)?;
        if !matches!(inner.init.state(), State::Running) || inner.init.exit_pending() {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint task {:?}: its init process is not running",
                self.id
            )));
        }
        inner.processes.checkpoint(&path, &options).await
    }

    /// `Pids`: every live process of the container.
    pub async fn pids(&self) -> Result<Vec<ProcessInfo>> {
        let mut state = self.lock().await?;
        Ok(inner(&mut state)?
            .processes
            .list()
            .await?
            .into_iter()
            .filter(|p| p.state != 'Z')
            .map(|p| ProcessInfo {
                pid: p.pid as u32,
                ..Default::default()
            })
            .collect())
    }

    /// `CloseIO`: end-of-file on the process's stdin, once pending input is delivered.
    pub async fn close_stdin(&self, exec_id: &str) -> Result<()> {
        let mut state = self.lock().await?;
        inner(&mut state)?
            .process(&self.id, exec_id)?
            .io
            .close_stdin();
        Ok(())
    }

    /// `ResizePty`: the window size of the process's terminal.
    pub async fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let mut state = self.lock().await?;
        inner(&mut state)?
            .process(&self.id, exec_id)?
            .io
            .resize(width, height)
    }

    /// `Pause` and `Resume`: every process of the container stopped, or going on.
    pub async fn set_paused(&self, pause: bool) -> Result<()> {
        let mut state = self.lock().await?;
        let inner = inner(&mut state)?;
        if !matches!(inner.init.state(), State::Running) || inner.init.exit_pending() {
            return Err(Error::FailedPrecondition(format!(
                "task {:?} is not running",
                self.id
            )));
        }
        if inner.paused == pause {
            let now = if pause { "paused" } else { "not paused" };
            return Err(Error::FailedPrecondition(format!(
                "task {:?} is already {now}",
                self.id
            )));
        }
        inner.processes.set_paused(pause).await?;
        inner.paused = pause;
        let id = self.id.clone();
        let event = if pause {
            TaskEvent::Paused { id }
        } else {
            TaskEvent::Resumed { id }
        };
        self.shared.events.publish(event).await;
        Ok(())
    }

    /// `Stats`: the container's figures (`cgroup/metrics.rs`).
    pub async fn stats(&self) -> Result<api::StatsResponse> {
        let mut state = self.lock().await?;
        let stats = inner(&mut state)?.processes.stats().await?;
        Ok(api::StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    /// `Update`: new limits, as the runtime spec's `LinuxResources` in JSON.
    pub async fn update(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        let mut state = self.lock().await?;
        let inner = inner(&mut state)?;
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
        inner.processes.update(&resources).await
    }
}

/// The member an exec id names: the init for the empty id.
fn member_of(exec_id: &str) -> Member {
    if exec_id.is_empty() {
        Member::Init
    } else {
        Member::Exec(exec_id.to_string())
    }
}

/// The state of a created container (NotFound otherwise).
fn inner<'a>(state: &'a mut MutexGuard<'_, Option<Inner>>) -> Result<&'a mut Inner> {
    state
        .as_mut()
        .ok_or_else(|| Error::NotFound("task not found in this shim".to_string()))
}

/// The init process (empty exec id) or an exec process of container `id`.
fn pick<'a>(
    id: &str,
    init: &'a mut Process,
    execs: &'a mut HashMap<String, Process>,
    exec_id: &str,
) -> Result<&'a mut Process> {
    if exec_id.is_empty() {
        return Ok(init);
    }
    execs.get_mut(exec_id).ok_or_else(|| {
        Error::NotFound(format!("exec process {exec_id:?} not found in task {id:?}"))
    })
}

impl Inner {
    /// The init process (empty exec id) or an exec process.
    fn process(&mut self, id: &str, exec_id: &str) -> Result<&mut Process> {
        pick(id, &mut self.init, &mut self.execs, exec_id)
    }

    /// True while its init process has not been reported exited.
    fn is_running(&self) -> bool {
        !self.init.is_stopped()
    }

    /// True when the init has exited and its exit is about to be recorded: not held while
    /// an exec starts (an `Exec` is then accepted, as by runc-v2, and its `Start` refused).
    fn init_exit_unheld(&self) -> bool {
        self.init.exit_pending() && self.starting.is_empty()
    }

    /// True while an exec process has not been reported exited.
    fn has_live_execs(&self) -> bool {
        // An exec never made (its model makes it at `Start`) has no exit to wait for.
        self.execs
            .values()
            .any(|exec| exec.exists() && !exec.is_stopped())
    }

    /// Which of the container's processes `pid` is, if its exit has not been recorded yet.
    fn live_member(&self, pid: i32) -> Option<Member> {
        if self.init.pid == pid && !self.init.is_stopped() {
            return Some(Member::Init);
        }
        self.execs
            .iter()
            .find(|(_, exec)| exec.pid == pid && !exec.is_stopped())
            .map(|(exec_id, _)| Member::Exec(exec_id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
