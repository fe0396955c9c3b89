//! The shim's lifecycle: the `start` and `delete` commands containerd runs, and which of
//! the three a run of the binary is.
//!
//! containerd runs the same binary three ways (see containerd's
//! [runtime v2 README](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/README.md)):
//!
//! 1. `containerd-shim-sample-v2 -namespace ns -id id -address a start`, in the bundle
//!    directory: [`start`] launches the long-lived server as a daemon (or finds the one
//!    serving the container's pod) and answers with its address on stdout, which is *all*
//!    containerd reads, so nothing else may be printed (`task/bootstrap.rs`: what it reads
//!    and answers);
//! 2. the daemon itself (no action, `-socket` given): serves the `Task` service until
//!    `Shutdown` finds no container left (`task/daemon.rs`);
//! 3. `... delete`, after every disconnect, including a crash of the daemon: [`delete`]
//!    cleans up whatever the daemon could not and answers a `DeleteResponse`.
//!
//! [`run`] tells them apart, from the flags the `containerd-shim` crate parses.

use std::{
    io::{Read, Write},
    os::unix::{
        fs::{DirBuilderExt, FileTypeExt},
        net::UnixStream,
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use containerd_shim::{api::ConnectRequest, api::DeleteResponse, Flags};
use containerd_shim_protos::{
    protobuf::Message,
    shim_async::{Client, TaskClient},
    ttrpc::{self, context},
};
use log::info;

use crate::{
    cgroup::{self, Cgroup, Hierarchy},
    error::{Error, Result},
    model::host::Host,
    model::modes::Modes,
    model::options::{self, Requested},
    model::ProcessModel,
    sys,
    task::bootstrap,
    task::bundle,
    task::container::validate_id,
    task::daemon,
    task::events::timestamp,
    task::exits::{self, Router},
    task::spec::{self, CONFIG_FILE},
    RUNTIME_ID,
};

/// The exit code `delete` reports for a task it had to kill: 128 + SIGKILL.
const KILLED_BY_DELETE: u32 = 128 + libc::SIGKILL as u32;

/// Runs what `flags` ask for (`start`, `delete`, or the daemon) and returns the process's
/// exit code; what went wrong is on stderr, which containerd shows.
pub async fn run(flags: Flags) -> i32 {
    if flags.version {
        println!("{RUNTIME_ID} {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let done = match flags.action.as_str() {
        "start" => start(&flags).and_then(|answer| {
            let mut stdout = std::io::stdout();
            stdout
                .write_all(&answer)
                .and_then(|()| stdout.flush())
                .map_err(Error::io("write the answer"))
        }),
        "delete" => delete().await.and_then(|response| {
            let bytes = response.write_to_bytes().map_err(|e| Error::Io {
                context: "encode the DeleteResponse".into(),
                source: std::io::Error::other(e),
            })?;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(Error::io("write the DeleteResponse"))
        }),
        "" if !flags.socket.is_empty() => daemon::run(&flags).await,
        other => Err(Error::InvalidArgument(format!(
            "unknown action {other:?}: containerd runs `start`, `delete`, or the daemon with -socket"
        ))),
    };
    match done {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{RUNTIME_ID}: {err}");
            1
        }
    }
}

/// `start`: finds or launches the daemon for this container, and returns the address
/// containerd must connect to.
///
/// Containers of one *group* share a daemon: a pod's containers (the CRI plugin's
/// `io.kubernetes.cri.sandbox-id`), or those a client marks with `com.example.sample.group`
/// (`spec::group`); any other container is a group of its own. The socket's name is a hash
/// of containerd's address, the namespace and the group, so groups never span namespaces.
/// When a daemon already serves the group's socket, `start` only records and prints its
/// address. Two `start`s of one group at once may both launch a daemon: the second cannot
/// bind the socket, finds the first serving it, and exits (`task/daemon.rs`), and both
/// print the same address.
///
/// The daemon is this binary again, with `-socket`. It gets a session of its own (`setsid`),
/// so it is detached from containerd: a containerd restart or a signal to containerd's
/// process group does not reach it, and it outlives the `start` process, which exits right
/// away. Its umask is 0177, so the socket it binds is mode 0600: only root can connect. The
/// daemon closes its stdout once it serves; reading that pipe to its end is how `start`
/// knows the address is ready before printing it.
pub fn start(opts: &Flags) -> Result<Vec<u8>> {
    // The id and namespace become part of the socket's name and of every log line.
    validate_id("task", &opts.id)?;
    validate_id("namespace", &opts.namespace)?;
    let bundle = std::env::current_dir().map_err(Error::io("current directory"))?;
    if !bundle.join(CONFIG_FILE).is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} has no {CONFIG_FILE}: `start` must run in the task's bundle directory",
            bundle.display()
        )));
    }
    // What containerd wrote on stdin: the container's runtime options, within
    // `BootstrapParams` from containerd 2.3 on (which then takes task API v3).
    let request = bootstrap::read(&read_stdin());
    // A spec that cannot be read is `Create`'s to report, with its reasons.
    let group =
        spec::read_spec(&bundle).map_or_else(|_| opts.id.clone(), |s| spec::group(&s, &opts.id));
    validate_id("group", &group)?;
    let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &group);
    let socket = bundle::socket_path(&address);
    let join = || {
        info!(
            "{}: joining the shim of group {group:?} at {address}",
            opts.id
        );
        bundle::write_address(&bundle, &address).map(|()| bootstrap::answer(&request, &address))
    };
    if group != opts.id && UnixStream::connect(&socket).is_ok() {
        return join();
    }
    // A task's own address may still be served, for a moment, by the shim of an earlier
    // task of the same id, which containerd just shut down (a `Create` that failed, and the
    // client creates the task again at once): that shim is given time to go.
    let grace = if group == opts.id {
        PREVIOUS_SHIM_GRACE
    } else {
        Duration::ZERO
    };
    match prepare_socket(&socket, grace) {
        // Another `start` of the group launched its daemon in between.
        Err(Error::AlreadyExists(_)) if group != opts.id => return join(),
        other => other?,
    }

    // runc-v2's `ShimCgroup` is the daemon's cgroup. Options that are wrong are `Create`'s
    // to refuse, with the right code: here, as in runc-v2, they only mean no `ShimCgroup`.
    let shim_cgroup = match options::from_request(request.options.as_ref()) {
        Ok(Requested::Oci(config)) => config.shim_cgroup,
        _ => None,
    };
    let exe = std::env::current_exe().map_err(Error::io("locate the shim binary"))?;
    let mut command = Command::new(exe);
    // The name containerd ran us by (`containerd-shim-runc-v2` or ours), which decides what
    // options that say nothing mean (`model/modes.rs`).
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    command
        .current_dir(&bundle)
        .args(["-namespace", &opts.namespace, "-id", &opts.id])
        .args(["-address", &opts.address, "-socket", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if opts.debug {
        command.arg("-debug");
    }
    // SAFETY: setsid, umask and close_range are async-signal-safe system calls
    // (`sys::child`), and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            sys::child::new_session()?;
            sys::child::set_umask(0o177);
            // Whatever containerd's parents leaked without close-on-exec stays behind.
            sys::child::close_on_exec_from(3);
            Ok(())
        });
    }
    let mut daemon = command
        .spawn()
        .map_err(Error::io("spawn the shim daemon"))?;
    if let Some(path) = shim_cgroup {
        // As runc-v2: the daemon is moved before it serves anything, so everything it
        // spawns is born there too; a cgroup that cannot take it fails the `start`.
        if let Err(err) = join_cgroup(&path, daemon.id() as i32) {
            let _ = daemon.kill();
            #[allow(clippy::disallowed_methods)] // `start` has no reaper: see below
            let _ = daemon.wait();
            return Err(err);
        }
    }
    raise_oom_score(daemon.id() as i32);
    let mut ready = Vec::new();
    if let Some(mut stdout) = daemon.stdout.take() {
        let _ = stdout.read_to_end(&mut ready);
    }
    // The daemon closes its stdout once it serves, but one that crashed closes it too, on
    // its way out, possibly before it is a zombie: a connection tells the two apart.
    // `start` is a short-lived process of its own, with no reaper running: waiting for its
    // own child here is safe.
    if UnixStream::connect(&socket).is_err() {
        let _ = daemon.kill();
        #[allow(clippy::disallowed_methods)] // `start` has no reaper: see just above
        let status = daemon
            .wait()
            .map_err(Error::io("wait for the shim daemon"))?;
        return Err(Error::Io {
            context: format!("the shim daemon exited ({status}) before serving {address}"),
            source: std::io::Error::other("see containerd's log for the shim's own"),
        });
    }
    bundle::write_address(&bundle, &address)?;
    Ok(bootstrap::answer(&request, &address))
}

/// Gives the daemon `pid` containerd's OOM score adjustment plus one, as runc-v2 does: under
/// memory pressure the kernel takes a shim before the containerd that manages it. Raising
/// it needs no privilege; where it fails anyway, the daemon keeps containerd's.
fn raise_oom_score(pid: i32) {
    let containerd = std::os::unix::process::parent_id();
    let path = |pid: u32| format!("/proc/{pid}/oom_score_adj");
    let raised = std::fs::read_to_string(path(containerd))
        .ok()
        .and_then(|score| score.trim().parse::<i32>().ok())
        .map(|score| (score + 1).min(1000));
    if let Some(score) = raised {
        if let Err(err) = std::fs::write(path(pid as u32), score.to_string()) {
            log::warn!("could not set the shim's oom_score_adj to {score}: {err}");
        }
    }
}

/// What containerd wrote on stdin. Read only from a pipe or a file, as containerd gives: a
/// terminal (a person trying `start`) is left alone.
fn read_stdin() -> Vec<u8> {
    let stdin = std::io::stdin();
    let mut bytes = Vec::new();
    let Ok(stat) = rustix::fs::fstat(&stdin) else {
        return bytes;
    };
    let kind = stat.st_mode & libc::S_IFMT;
    if kind == libc::S_IFIFO || kind == libc::S_IFREG {
        let _ = stdin.lock().read_to_end(&mut bytes);
    }
    bytes
}

/// Moves process `pid` into the cgroup `path` (runc-v2's `ShimCgroup`), made if missing.
fn join_cgroup(path: &str, pid: i32) -> Result<()> {
    let invalid = |why: String| Error::InvalidArgument(format!("ShimCgroup {path:?}: {why}"));
    let hierarchy =
        Hierarchy::detect().ok_or_else(|| invalid("no cgroup hierarchy is mounted".into()))?;
    let relative = cgroup::cgroup_path(path)?.ok_or_else(|| invalid("empty".into()))?;
    let cgroup = Cgroup {
        hierarchy,
        path: relative,
    };
    let joined = cgroup.create().and_then(|()| cgroup.add(pid));
    joined.map_err(|err| invalid(format!("cannot move the shim there: {err}")))
}

/// How long `start` waits for a shim that still serves the task's address to go.
const PREVIOUS_SHIM_GRACE: Duration = Duration::from_secs(2);

/// Makes the directory for the socket, and clears a stale socket left by a crashed shim.
/// A socket that still answers after `grace` belongs to a live shim: refusing is the only
/// safe answer.
fn prepare_socket(socket: &Path, grace: Duration) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(Error::io(format!("create {}", dir.display())))?;
    }
    let deadline = std::time::Instant::now() + grace;
    loop {
        match std::fs::symlink_metadata(socket) {
            Err(_) => return Ok(()),
            Ok(meta) if meta.file_type().is_socket() && UnixStream::connect(socket).is_err() => {
                return std::fs::remove_file(socket)
                    .or_else(|e| match e.kind() {
                        // Its shim removed it meanwhile.
                        std::io::ErrorKind::NotFound => Ok(()),
                        _ => Err(e),
                    })
                    .map_err(Error::io(format!("remove stale {}", socket.display())));
            }
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {
                return Err(Error::AlreadyExists(format!(
                    "{} is in use: another shim serves this task",
                    socket.display()
                )))
            }
        }
    }
}

/// True when a live shim still serves `address`.
///
/// A connection alone does not tell: a shim that was just killed may still have its
/// listening socket for a moment (the kernel closes it last), but the connection is then
/// refused or closed without an answer. So `delete` asks for a `Connect`: an answer means
/// alive, and so does no answer yet within a second (a busy shim, one handling an exit),
/// only a refused or closed connection means dead. With pods a live shim is the usual case:
/// containerd runs `delete` after each container of a pod, while the pod's shim serves the
/// others.
async fn serving(address: &str) -> bool {
    let limit = std::time::Duration::from_secs(1);
    let asked = async {
        let client = TaskClient::new(Client::connect(address).await.ok()?);
        let ctx = context::with_timeout(limit.as_nanos() as i64);
        Some(client.connect(ctx, &ConnectRequest::default()).await)
    };
    match tokio::time::timeout(limit, asked).await {
        Ok(Some(Ok(_))) => true,
        // No connection, or a connection that ended without an answer.
        Ok(None)
        | Ok(Some(Err(
            ttrpc::Error::Socket(_)
            | ttrpc::Error::Nix(_)
            | ttrpc::Error::Eof
            | ttrpc::Error::LocalClosed
            | ttrpc::Error::RemoteClosed,
        ))) => false,
        // Any other answer (an error status, our own deadline): a live, maybe busy, shim.
        Ok(Some(Err(_))) | Err(_) => true,
    }
}

/// `delete`: containerd's cleanup after the daemon is gone, whether it exited or crashed.
///
/// Idempotent: it may run after a clean shutdown (nothing left to do), after a crash (the
/// task may still run, re-parented away from the dead shim), or twice. The process model
/// ends what is left of the task ([`ProcessModel::clean_up_after_crash`]); this removes the
/// socket a crashed daemon could not remove. The answer is always 128 + SIGKILL, as runc's
/// shim.
pub async fn delete() -> Result<DeleteResponse> {
    let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    // The same process models the daemon ran the task with (`model/mod.rs`). The OCI mode
    // runs its runtime's `delete`, whose exit comes through the reaper, as in the daemon.
    let exits = exits::reaper().map_err(Error::io("watch SIGCHLD"))?;
    let host = Host::new(Path::new("/proc/self/exe"), Default::default());
    // The namespace only names a new container's state directory; `oci.json` has its own.
    let model = Modes::new(host, Router::serve(exits), "");
    let pid = model.clean_up_after_crash(&bundle).await;
    if let Some(address) = bundle::read_address(&bundle) {
        let socket = bundle::socket_path(&address);
        if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket())
            && !serving(&address).await
        {
            let _ = std::fs::remove_file(&socket);
        }
    }
    Ok(DeleteResponse {
        pid: pid.max(0) as u32,
        exit_status: KILLED_BY_DELETE,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn a_socket_whose_shim_goes_within_the_grace_is_taken_over_one_that_stays_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let socket = dir.path().join("s");
        // The previous shim of the task: it stops listening 200 ms later, as a shim that
        // containerd just shut down.
        let listener = UnixListener::bind(&socket).expect("bind");
        let going = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(listener);
        });
        prepare_socket(&socket, Duration::from_secs(2)).expect("taken over");
        assert!(!socket.exists(), "the stale socket is removed");
        going.join().expect("thread");

        let _staying = UnixListener::bind(&socket).expect("bind");
        let refused = prepare_socket(&socket, Duration::from_millis(100));
        assert!(
            matches!(&refused, Err(Error::AlreadyExists(m)) if m.contains("in use")),
            "{refused:?}"
        );
    }
}
