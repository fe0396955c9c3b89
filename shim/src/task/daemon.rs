//! The shim daemon: the long-lived process containerd talks to, from its first breath to
//! its last.
//!
//! `start` (`task/shim.rs`) runs this binary again with `-socket ADDRESS` and waits until it
//! serves. In order, the daemon:
//!
//! 1. opens the log FIFO containerd reads (`logfmt.rs`);
//! 2. becomes the child subreaper and starts the one reaper (`task/exits.rs`), before anything
//!    can be spawned: no exit is missed;
//! 3. ignores SIGTERM, SIGINT and SIGPIPE: containerd ends a shim with `Shutdown`, never with
//!    a signal, and a terminal's Ctrl-C or a reader gone must not end every container;
//! 4. checks that containerd's event service answers, builds the task service (`task/service.rs`) and binds the socket (a second daemon of
//!    the same group, started at the same moment, finds the first serving and leaves);
//! 5. serves the `Task` service under both of containerd's names, `containerd.task.v2.Task`
//!    and `containerd.task.v3.Task`: containerd's [v3 `shim.proto`](https://github.com/containerd/containerd/blob/v2.3.4/api/runtime/task/v3/shim.proto)
//!    is v2's with the package renamed, so one handler table serves both; which one
//!    containerd uses is `start`'s answer (`task/bootstrap.rs`);
//! 6. closes its stdout (`start` reads it to its end: that is "serving");
//! 7. waits for `Shutdown` with no container left, answers the events still in flight, and
//!    removes its socket.
//!
//! The `containerd-shim` crate has all of this inside its `run`, with one task API; the
//! daemon is written out here so that it can serve two, and so that a reader sees it whole.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use containerd_shim::{asynchronous::ExitSignal, Flags};
use containerd_shim_protos::{
    shim_async::create_task,
    ttrpc::{asynchronous::Server, r#async::transport::Listener},
};
use log::info;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    error::{Error, Result},
    logfmt,
    task::bundle,
    task::events::Publisher,
    task::exits,
    task::rpc::TaskService,
    task::service::Service,
};

/// The name of the task service in task API v2, as the generated code registers it.
const TASK_V2: &str = "containerd.task.v2.Task";

/// Its name in task API v3 (containerd 2.x).
const TASK_V3: &str = "containerd.task.v3.Task";

/// How long the daemon waits for containerd to answer its last events before it exits:
/// what containerd's own shims give it.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Runs the daemon for `flags` until `Shutdown`.
pub async fn run(flags: &Flags) -> Result<()> {
    if let Err(err) = logfmt::init(flags.debug) {
        // `start` reports that the daemon exited before serving.
        return Err(Error::io("open the log FIFO")(err));
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(Error::sys("become the child subreaper"))?;
    let exits = exits::reaper().map_err(Error::io("watch SIGCHLD"))?;
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::pipe(),
    ] {
        let mut ignored = signal(kind).map_err(Error::io("handle SIGTERM, SIGINT, SIGPIPE"))?;
        tokio::spawn(async move {
            while ignored.recv().await.is_some() {
                info!("signal {kind:?} ignored: containerd ends a shim with Shutdown");
            }
        });
    }

    // containerd's event service: a daemon that cannot reach it would run containers whose
    // exits nobody learns of; it exits before serving, and `start` says so.
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    std::os::unix::net::UnixStream::connect(bundle::socket_path(&ttrpc_address)).map_err(
        Error::io(format!(
            "reach containerd's event service at {ttrpc_address:?}"
        )),
    )?;
    let events = Publisher::new(ttrpc_address, flags.namespace.clone());
    let flushed = events.flushed();
    let exit = Arc::new(ExitSignal::default());
    // `/proc/self/exe` is this binary, even if it was replaced on disk since.
    let service = Service::new(
        events,
        exit.clone(),
        exits,
        Path::new("/proc/self/exe"),
        &flags.namespace,
    );

    let socket = bundle::socket_path(&flags.socket);
    let Some(listener) = bind(&socket).await? else {
        info!("{} is served by another daemon of the group", flags.socket);
        return Ok(());
    };
    let task: Arc<dyn containerd_shim_protos::shim_async::Task + Send + Sync> =
        Arc::new(TaskService(service));
    let mut services = create_task(task.clone());
    let mut v3: HashMap<_, _> = create_task(task);
    if let Some(v3) = v3.remove(TASK_V2) {
        services.insert(TASK_V3.to_string(), v3);
    }
    let listener = Listener::try_from(listener).map_err(Error::io("a ttrpc listener"))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server
        .start()
        .await
        .map_err(|e| Error::io("start the ttrpc server")(std::io::Error::other(e)))?;
    serving();
    info!("serving the task API (v2 and v3) at {}", flags.socket);

    exit.wait().await;
    if tokio::time::timeout(FLUSH_DEADLINE, flushed).await.is_err() {
        info!("events still unanswered after {FLUSH_DEADLINE:?}: exiting anyway");
    }
    let _ = server.shutdown().await;
    // Removed here: containerd may delete the bundle (and the `address` file) as soon as
    // `Shutdown` returns.
    if let Err(err) = std::fs::remove_file(&socket) {
        info!("remove socket {}: {err}", socket.display());
    }
    Ok(())
}

/// Binds the socket; `None` when another daemon serves it already (two `start`s of one
/// group at once). A stale socket, left by a daemon that died, is replaced.
async fn bind(socket: &Path) -> Result<Option<std::os::unix::net::UnixListener>> {
    let bound = |path: &Path| {
        std::os::unix::net::UnixListener::bind(path)
            .map_err(Error::io(format!("listen on {}", path.display())))
    };
    match std::os::unix::net::UnixListener::bind(socket) {
        Ok(listener) => Ok(Some(listener)),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            for _ in 0..5 {
                if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                    return Ok(None);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = std::fs::remove_file(socket);
            bound(socket).map(Some)
        }
        Err(err) => Err(Error::io(format!("listen on {}", socket.display()))(err)),
    }
}

/// Tells `start` the daemon serves: its stdout, the pipe `start` reads to the end, becomes
/// a copy of its stderr (`/dev/null`).
fn serving() {
    // SAFETY: dup2 on the process's own standard descriptors.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}
