//! The process model: the one seam between the task logic and *how* a container's processes
//! run.
//!
//! The task logic (`task/service.rs`, `task/container.rs`) knows containerd's task API: ids, states,
//! events, the exit policy, stdio. It never spawns, signals as a group, lists, freezes or
//! measures processes itself; it asks the container's [`Instance`], which a
//! [`ProcessModel`] made at `Create`. There are two models, picked per container by
//! [`modes`]: [`host`] (host processes behind the start-gate helper, found through their
//! cgroup or, without one, through the process tree) and [`oci`] (real containers made by
//! an OCI runtime binary, runc or crun). A model for a VM or a wasm engine implements the
//! same two traits and nothing else, and writes only what differs from the defaults: with a
//! cgroup to read ([`Instance::cgroup`]), `thaw`, `stats` and the OOM count and watch come
//! for free. See "Fork it for your own runtime" in docs/ARCHITECTURE.md.
//!
//! What a model may rely on, and must keep:
//!
//! - Every process it makes is a child (or, through the child subreaper, a descendant) of
//!   the shim, and is reaped only by the shim's reaper (`task/exits.rs`): no `Child::wait`, no
//!   `tokio::process`. Its exit reaches the container through the [`NewProcess::pidfd`] and
//!   the reaper, never through the model.
//! - [`Instance::create`] and [`Instance::exec`] may take their time (an OCI runtime's
//!   `create` does): the pid they return is routed to its container afterwards, and an exit
//!   the reaper saw before that is kept for it (`exits::Router`).
//! - The container calls one method at a time (it holds its own lock), so a model keeps
//!   its state in `&mut self` without locks of its own; a slow call delays that container
//!   (an exec made at `Start`, [`Made::AtStart`], delays nothing: it runs out of the lock,
//!   and owns what it needs), **provided it never blocks the shim's one thread**: `.await` what can be
//!   awaited (a child's report on a pipe, a runtime binary's exit through the reaper), and
//!   run what cannot (a mount, a VM's boot, a wasm compile) through [`blocking`], which
//!   puts it on a thread of its own under a deadline.

pub mod ending;
pub mod host;
pub mod modes;
pub mod oci;
pub mod options;

use std::{future::Future, os::fd::OwnedFd, path::Path, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use containerd_shim_protos::{
    api::CreateTaskRequest, protobuf::well_known_types::any::Any, shim::oci::CheckpointOptions,
};
use oci_spec::runtime::{LinuxResources, Spec};

use log::warn;

use crate::{
    cgroup::{metrics, oom::OomWatch, Cgroup},
    error::{Error, Result},
    stdio::{ChildStdio, PtyMaker},
    sys::procfs::ProcStat,
    sys::Signal,
    task::spec::Kind,
};

/// A process a model made: held before its program runs, until [`Instance::start`], or
/// made at `Start` ([`Made::AtStart`]).
pub struct NewProcess {
    /// Its pid.
    pub pid: i32,
    /// A handle on exactly this process (a pidfd), if the model took one before the reaper
    /// could collect the process: a `clone3`'s `CLONE_PIDFD` (the host model), runc's
    /// `--pidfd-socket` (1.2 and later), a VMM's own handle. Signals through it cannot hit a
    /// recycled pid, and it polls readable once the process has exited. `None`: the shim
    /// takes one when it routes the pid (`exits::Router::add`), within the window opened
    /// before the process was made, which is right but for a pid reused in between.
    pub pidfd: Option<Arc<OwnedFd>>,
    /// The master side of its terminal, when the model made the terminal
    /// ([`Instance::pty_maker`] says so).
    pub terminal: Option<OwnedFd>,
}

/// What [`Instance::create`] and [`Instance::exec`] made.
pub enum Made {
    /// The process, held before its program runs until [`Instance::start`].
    Held(NewProcess),
    /// Nothing yet: `Start` makes the process by running this future, out of the
    /// container's lock, so that the container answers its other RPCs meanwhile (an OCI
    /// runtime's `exec` takes as long as the runtime likes; its `restore` of an init from a
    /// checkpoint, too). Then the model hears of it ([`Instance::started`]). A `Delete`
    /// before `Start` drops it unrun.
    AtStart(MakeAtStart),
}

/// The making of a process at its `Start` ([`Made::AtStart`]).
pub type MakeAtStart = Pin<Box<dyn Future<Output = Result<NewProcess>> + Send>>;

/// Which process of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// The init process.
    Init,
    /// The exec process with this exec id.
    Exec(String),
}

/// What a shim runs its containers with: makes each container's [`Instance`] at `Create`,
/// and cleans up after a shim that died.
#[async_trait]
pub trait ProcessModel: Send + Sync + 'static {
    /// The processes of a new container `id`, from its bundle and spec: checks what can be
    /// checked before anything runs (the command, the cgroup, the limits) and makes what
    /// the container needs (its cgroup). Nothing runs yet: [`Instance::create`] does.
    ///
    /// `req` is containerd's request as it came: the id, the bundle, the root filesystem's
    /// mounts (which a model with a root filesystem mounts), the runtime's options, and
    /// the `checkpoint` to restore, if any: a model that cannot restore refuses it
    /// (FailedPrecondition), never starts the container fresh instead.
    async fn container(
        &self,
        req: &CreateTaskRequest,
        spec: &Spec,
        kind: &Kind,
    ) -> Result<Box<dyn Instance>>;

    /// `containerd-shim-sample-v2 delete`, run in the bundle after the shim is gone
    /// (crashed, or killed): ends whatever of the container still runs and removes what it
    /// held, from what the bundle says. Idempotent. Returns the init's pid if known (0
    /// otherwise), for containerd's answer.
    async fn clean_up_after_crash(&self, bundle: &Path) -> i32;
}

/// One container's processes, as its model runs them.
#[async_trait]
pub trait Instance: Send + 'static {
    /// The container's cgroup, where the model can read it (made by the shim, or by an
    /// OCI runtime at the spec's path): what the default methods below (`thaw`, `stats`,
    /// the OOM count and watch) and the shim's ending of leftovers go by. `None` (the
    /// default): a model without one writes those methods itself.
    fn cgroup(&self) -> Option<&Cgroup> {
        None
    }

    /// Whether the init process gets a terminal (its spec's `process.terminal`): the
    /// container opens the stdio to match before [`Instance::create`].
    fn init_terminal(&self) -> bool;

    /// Who makes a terminal: the shim before the process (the default), or the model as it
    /// makes the process ([`NewProcess::terminal`]).
    fn pty_maker(&self) -> PtyMaker {
        PtyMaker::Shim
    }

    /// `Create`: makes the init process with `stdio`, held before its program runs, or
    /// ([`Made::AtStart`]) left for `Start` to make: a restore from a checkpoint
    /// ([`ProcessModel::container`] had the request's `checkpoint`).
    async fn create(&mut self, stdio: ChildStdio) -> Result<Made>;

    /// Whether an `Exec` of the OCI `process` can run here (its command, its working
    /// directory), checked before its stdio is opened: nothing is started for an exec
    /// that would be refused.
    fn check_exec(&self, process: &oci_spec::runtime::Process) -> Result<()>;

    /// `Exec`: another process in the container, `exec_id`, from an OCI `process`: made
    /// and held the same way ([`Made::Held`]), or left for `Start` to make
    /// ([`Made::AtStart`]: an OCI runtime's `exec` runs the process at once). The container
    /// has checked that its init runs and is not paused.
    async fn exec(
        &mut self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: ChildStdio,
    ) -> Result<Made>;

    /// `Start`: lets the held process `pid` of `member` run its program.
    async fn start(&mut self, member: &Member, pid: i32) -> Result<()>;

    /// A process made at `Start` ([`Made::AtStart`]) runs as `pid`. By default, nothing
    /// to note.
    fn started(&mut self, member: &Member, pid: i32) {
        let _ = (member, pid);
    }

    /// `Checkpoint`: the running container's image written into `path` (containerd's
    /// directory, or the options' `image_path`), as `options` ask (runc-v2's
    /// `CheckpointOptions`: exit or leave it running, keep open TCP connections, ...).
    /// With `exit`, the container's processes end, and their exits come as any other.
    async fn checkpoint(&mut self, path: &Path, options: &CheckpointOptions) -> Result<()>;

    /// `Delete` of a held process never started: it must exit without running anything
    /// (the container has already sent it SIGKILL).
    fn cancel(&mut self, member: &Member, pid: i32);

    /// `Kill --all`: `signal` to every process of the container. The container has checked
    /// that its init runs.
    async fn signal_all(&mut self, signal: Signal) -> Result<()>;

    /// `Pids` and `Stats`: the container's live processes.
    async fn list(&mut self) -> Result<Vec<ProcStat>>;

    /// `Pause` (`true`) and `Resume` (`false`): every process of the container, and
    /// whatever it forks meanwhile, stops or goes on.
    async fn set_paused(&mut self, paused: bool) -> Result<()>;

    /// Lets the processes of a paused container die of the SIGKILL they got (a frozen
    /// process dies only once thawed): best effort, at once, never paused again. By
    /// default, thaws the container's cgroup.
    fn thaw(&mut self) {
        if let Some(cgroup) = self.cgroup().filter(|c| c.can_freeze()) {
            let _ = cgroup.set_frozen(false);
        }
    }

    /// `Stats`: the container's figures, as containerd's `Metrics` in an `Any`. By default,
    /// its cgroup's (`cgroup::metrics`), or what `/proc` says of [`Instance::list`].
    async fn stats(&mut self) -> Result<Any> {
        if let Some(cgroup) = self.cgroup() {
            return metrics::of_cgroup(cgroup).map_err(Error::io(format!(
                "read the cgroup {}",
                cgroup.path.display()
            )));
        }
        let processes = self.list().await?;
        metrics::of_processes(&processes).map_err(Error::io("encode metrics"))
    }

    /// `Update`: new limits for the container.
    async fn update(&mut self, resources: &LinuxResources) -> Result<()>;

    /// The OOM killer's kills among the container's processes so far, if they are counted.
    /// By default, its cgroup's count.
    fn oom_kills(&self) -> Option<u64> {
        self.cgroup().and_then(Cgroup::oom_kills)
    }

    /// A watch that wakes when the OOM killer may have struck (`cgroup::oom`), if there is
    /// one. By default, on its cgroup.
    fn watch_ooms(&self) -> Option<OomWatch> {
        let cgroup = self.cgroup()?;
        match OomWatch::new(cgroup) {
            Ok(watch) => watch,
            Err(err) => {
                warn!("{}: no OOM notifications: {err}", cgroup.path.display());
                None
            }
        }
    }

    /// The exit of process `pid` (the init, or an exec) was recorded: forget what was kept
    /// for it (the default keeps nothing).
    fn exit_recorded(&mut self, pid: i32) {
        let _ = pid;
    }

    /// The init process has exited: ends everything left of the container, and returns
    /// once it is gone or [`crate::task::exits::LEFTOVER_DEADLINE`] has passed.
    async fn init_exited(&mut self);

    /// `Delete` of the container: ends whatever is left and removes what it held (its
    /// cgroup, its mounts). Also called when `Create` fails after [`ProcessModel::container`].
    async fn release(&mut self);
}

tokio::task_local! {
    /// When the request being served must be answered: containerd's deadline for it (ttrpc's
    /// `timeout_nano`, from its caller's context), set by `task/rpc.rs` around each RPC. A
    /// model bounds what it waits for on the request's behalf by it ([`deadline`]).
    static REQUEST_DEADLINE: Option<std::time::Instant>;
}

/// Runs `work` as the request with `timeout_nano` (0: none), whose deadline [`deadline`]
/// reads.
pub async fn within_request<F: std::future::Future>(timeout_nano: i64, work: F) -> F::Output {
    let deadline = (timeout_nano > 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_nanos(timeout_nano as u64));
    REQUEST_DEADLINE.scope(deadline, work).await
}

/// How much earlier than the request's deadline a call made for it ends: the ttrpc server
/// drops a request at its deadline with a bare "timed out", so the call fails a little
/// before, and its own error (what hung, for how long) is what containerd receives.
const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The moment a call made for the current request must end: shortly before the request's
/// deadline (by `ANSWER_MARGIN`), or `default` from now when it has none (or when no request
/// is being served: a `delete` after a crash, an exit's cleanup), whichever comes first.
pub fn deadline(default: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    let own = now + default;
    match REQUEST_DEADLINE.try_with(|d| *d) {
        Ok(Some(request)) => request
            .checked_sub(ANSWER_MARGIN)
            .unwrap_or(request)
            .max(now)
            .min(own),
        _ => own,
    }
}

/// Runs `work`, a call that blocks (a mount, a VM's boot, a wasm compile), on a thread of
/// its own, and waits for it without blocking the shim's thread: the reaper, ttrpc and
/// every other container go on meanwhile. Past `deadline` the call fails with
/// `DeadlineExceeded`, naming `what`; the thread is left to finish alone (a hung mount
/// cannot be cancelled), and what it made is the caller's to undo.
///
/// A thread per call, not tokio's blocking pool: `work` may change its thread's state (the
/// crate's overlay mount `unshare`s the working directory), which a pooled thread would
/// keep for the next caller.
pub async fn blocking<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("blocking".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(Error::io(format!("start a thread to {what}")))?;
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::Io {
            context: what.to_string(),
            source: std::io::Error::other("its thread panicked"),
        }),
        Err(_) => Err(Error::DeadlineExceeded(format!(
            "{what}: not done within {deadline:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that hangs fails at its deadline, and the runtime's thread is free meanwhile.
    #[tokio::test]
    async fn a_blocking_call_fails_at_its_deadline_and_blocks_nothing() {
        let ticks = tokio::spawn(async {
            let mut n = 0;
            while n < 10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                n += 1;
            }
            n
        });
        let hung = blocking("hang", Duration::from_millis(300), || {
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
        })
        .await;
        assert!(matches!(hung, Err(Error::DeadlineExceeded(ref m)) if m.contains("hang")));
        assert_eq!(
            ticks.await.expect("ticks"),
            10,
            "the runtime thread was blocked"
        );
        let done = blocking("add", Duration::from_secs(5), || Ok(2 + 2)).await;
        assert_eq!(done.expect("done"), 4);
    }
}
