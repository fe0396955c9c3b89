//! Bad input straight to the shim's ttrpc socket (as containerd would send it, but wrong):
//! each is answered with a clear error and the right code, and the shim keeps serving.

use std::{
    fs,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use containerd_shim_protos::{
    protobuf::well_known_types::any::Any,
    shim::shim::{
        CreateTaskRequest, ExecProcessRequest, KillRequest, ShutdownRequest, StateRequest,
    },
    shim::shim_ttrpc::TaskClient,
    ttrpc::{self, context, Code},
};
use integration::Containerd;

fn client(address: &str) -> TaskClient {
    TaskClient::new(ttrpc::Client::connect(address).expect("connect to the shim"))
}

fn ctx() -> context::Context {
    context::with_timeout(Duration::from_secs(10).as_nanos() as i64)
}

/// The gRPC code and message of a failed call.
fn status<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> (Code, String) {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected an error status, got {other:?}"),
    }
}

fn exec_spec() -> Any {
    let process = serde_json::json!({
        "args": ["true"], "cwd": "/", "user": { "uid": 0, "gid": 0 }, "env": ["PATH=/usr/bin:/bin"],
    });
    Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: process.to_string().into_bytes(),
        ..Default::default()
    }
}

fn shim_address(cd: &Containerd, id: &str) -> String {
    fs::read_to_string(cd.dir().join(format!(
        "state/io.containerd.runtime.v2.task/{}/{id}/address",
        cd.namespace()
    )))
    .expect("address file")
}

#[test]
fn bad_ids_signals_and_stdio_paths_are_refused_with_the_right_codes() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    cd.run_detached("target", &["sleep", "1000"]);
    let shim = client(&shim_address(&cd, "target"));

    let long = "x".repeat(77);
    for bad in ["a/b", "..", "../etc", "a\0b", long.as_str()] {
        let req = ExecProcessRequest {
            id: "target".into(),
            exec_id: bad.into(),
            spec: Some(exec_spec()).into(),
            ..Default::default()
        };
        let (code, message) = status(shim.exec(ctx(), &req));
        assert_eq!(code, Code::INVALID_ARGUMENT, "exec id {bad:?}: {message}");
        let req = CreateTaskRequest {
            id: bad.into(),
            bundle: "/nonexistent".into(),
            ..Default::default()
        };
        assert_eq!(
            status(shim.create(ctx(), &req)).0,
            Code::INVALID_ARGUMENT,
            "task id {bad:?}"
        );
    }

    // Only FIFOs (or nothing) as stdio: a regular file, a symlink and a device are refused,
    // and no process is left behind.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    fs::write(&file, b"").expect("file");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    for (i, path) in [file.as_path(), link.as_path(), Path::new("/dev/null")]
        .iter()
        .enumerate()
    {
        let exec_id = format!("bad-stdio-{i}");
        let req = ExecProcessRequest {
            id: "target".into(),
            exec_id: exec_id.clone(),
            stdout: path.display().to_string(),
            spec: Some(exec_spec()).into(),
            ..Default::default()
        };
        let (code, message) = status(shim.exec(ctx(), &req));
        assert_eq!(
            code,
            Code::INVALID_ARGUMENT,
            "{}: {message}",
            path.display()
        );
        let state = StateRequest {
            id: "target".into(),
            exec_id,
            ..Default::default()
        };
        assert_eq!(status(shim.state(ctx(), &state)).0, Code::NOT_FOUND);
    }
    assert_eq!(
        fs::read(&file).expect("file"),
        b"",
        "nothing was written to the regular file"
    );

    for signal in [0, 65, 1000] {
        let req = KillRequest {
            id: "target".into(),
            signal,
            ..Default::default()
        };
        assert_eq!(
            status(shim.kill(ctx(), &req)).0,
            Code::INVALID_ARGUMENT,
            "signal {signal}"
        );
    }
    let req = KillRequest {
        id: "target".into(),
        exec_id: "nope".into(),
        signal: 15,
        ..Default::default()
    };
    assert_eq!(status(shim.kill(ctx(), &req)).0, Code::NOT_FOUND);

    // A ttrpc frame announcing more than 4 MiB: the connection is refused, the shim lives.
    let socket = shim_address(&cd, "target")
        .trim_start_matches("unix://")
        .to_string();
    let mut raw = UnixStream::connect(&socket).expect("raw connection");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let length: u32 = 5 << 20;
    let mut header = length.to_be_bytes().to_vec();
    header.extend(1u32.to_be_bytes()); // stream id
    header.extend([1u8, 0u8]); // request, no flags
    let _ = raw.write_all(&header);
    let _ = raw.write_all(&vec![0u8; 64 * 1024]);
    let mut buf = [0u8; 256];
    let _ = raw.read(&mut buf);
    drop(raw);

    let state = StateRequest {
        id: "target".into(),
        ..Default::default()
    };
    let answer = client(&shim_address(&cd, "target"))
        .state(ctx(), &state)
        .expect("still serving");
    assert_eq!(answer.status.value(), 2, "still RUNNING");

    cd.kill_and_remove("target", "SIGTERM");
    cd.wait_shims_gone();
}

/// Starts a shim of our own (as containerd would: `start` in a bundle, with the `log` FIFO
/// the shim writes its log lines to), with no task yet. Returns the address and the log
/// FIFO, held open read-write so the shim's writes never block.
fn start_bare_shim(cd: &Containerd, bundle: &Path, id: &str) -> (String, fs::File) {
    let log = bare_bundle(bundle);
    let out = start_command(cd, bundle, id)
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", cd.address.display()))
        .output()
        .expect("start");
    assert!(out.status.success(), "{out:?}");
    (String::from_utf8(out.stdout).expect("address"), log)
}

/// `<shim> -namespace bad-input -id <id> -address <containerd> start`, in `bundle`.
fn start_command(cd: &Containerd, bundle: &Path, id: &str) -> Command {
    let mut command = Command::new(&cd.shim);
    command
        .args(["-namespace", "bad-input", "-id", id, "-address"])
        .arg(&cd.address)
        .arg("start")
        .current_dir(bundle);
    command
}

/// Makes `bundle` a bundle with a minimal `config.json` and the `log` FIFO, which it
/// returns held open read-write so the shim's writes never block.
fn bare_bundle(bundle: &Path) -> fs::File {
    let log = bundle.join("log");
    let c_log = std::ffi::CString::new(log.display().to_string()).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c_log.as_ptr(), 0o600) },
        0,
        "mkfifo log"
    );
    let log = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .expect("open log FIFO");
    fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0}}}"#,
    )
    .expect("config");
    log
}

#[test]
fn a_daemon_that_dies_before_serving_fails_start_and_leaves_nothing() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    // The daemon cannot reach containerd's event service, so it exits before it serves: it
    // closes its stdout on the way out, as a ready daemon would. `start` must not take that
    // for readiness and print an address nobody answers.
    let bundle = tempfile::tempdir().expect("bundle");
    let _log = bare_bundle(bundle.path());
    let id = "dies-early";
    let out = start_command(&cd, bundle.path(), id)
        .env("TTRPC_ADDRESS", bundle.path().join("no-such.ttrpc"))
        .output()
        .expect("start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start succeeded: {out:?}");
    assert!(stderr.contains("before serving"), "{stderr}");
    assert!(
        !bundle.path().join("address").exists(),
        "start wrote an address for a dead daemon"
    );
    let daemons: Vec<i32> = integration::proc::all_pids()
        .into_iter()
        .filter(|&pid| integration::proc::cmdline(pid).iter().any(|a| a == id))
        .collect();
    assert!(daemons.is_empty(), "daemons left: {daemons:?}");
}

#[test]
fn missing_oversized_and_malformed_config_json_are_invalid_arguments() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let bundle = tempfile::tempdir().expect("bundle");
    let (address, _log) = start_bare_shim(&cd, bundle.path(), "bare");
    let shim = client(&address);

    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("missing", None),
        ("oversized", Some(vec![b' '; 5 << 20])),
        ("malformed", Some(b"{ not json".to_vec())),
    ];
    for (name, content) in cases {
        let dir: PathBuf = bundle.path().join(name);
        fs::create_dir(&dir).expect("dir");
        if let Some(content) = content {
            fs::write(dir.join("config.json"), content).expect("write config");
        }
        let req = CreateTaskRequest {
            id: name.into(),
            bundle: dir.display().to_string(),
            ..Default::default()
        };
        let (code, message) = status(shim.create(ctx(), &req));
        assert_eq!(code, Code::INVALID_ARGUMENT, "{name}: {message}");
        assert!(message.contains("config.json"), "{name}: {message}");
    }
    // No task was created: the shim shuts down when asked, and removes its socket.
    shim.shutdown(ctx(), &ShutdownRequest::default()).ok();
    let socket = PathBuf::from(address.trim_start_matches("unix://"));
    for _ in 0..250 {
        if !socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !socket.exists(),
        "the shim exited and removed {}",
        socket.display()
    );
}
