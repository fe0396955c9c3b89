//! `containerd-shim-sample-v2 -info`: what the runtime supports, asked by containerd 2.x.
//!
//! containerd 2.x runs the shim with `-info` and a handler's runtime options on stdin (a
//! protobuf `Any`), and reads a `containerd.types.RuntimeInfo` on stdout (containerd's
//! [`api/types/introspection.proto`](https://github.com/containerd/containerd/blob/v2.1.0/api/types/introspection.proto)).
//! Its CRI plugin reads the OCI runtime's *features* from it (`runc features`, the
//! runtime-spec's [features.md](https://github.com/opencontainers/runtime-spec/blob/main/features.md)):
//! user namespaces need `user` among the namespaces and idmapped mounts, recursive
//! read-only mounts need `rro` among the mount options; without features, containerd
//! assumes neither, and refuses a container with idmapped mounts. runc-v2 answers the same:
//! its name and version, the options it was given, and the runtime's features as JSON.
//!
//! The OCI mode's runtime is the one the options name (runc for options that say nothing,
//! under runc-v2's name: `model/modes.rs`); the host mode has no OCI runtime and reports no
//! features.

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use containerd_shim_protos::{
    protobuf::{well_known_types::any::Any, Message, MessageField},
    types::introspection::{RuntimeInfo, RuntimeVersion},
};

use crate::{
    error::{Error, Result},
    model::modes::runs_as_runc_v2,
    model::options::{self, OciConfig, Requested},
    RUNTIME_ID,
};

/// The type URL containerd registers for the runtime-spec's `features.Features`, whose
/// value is the JSON `runc features` prints.
pub const FEATURES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// How long the runtime's `features` may take.
const FEATURES_DEADLINE: Duration = Duration::from_secs(10);

/// Whether the shim was run as `-info` (Go's flag package takes `--info` too).
pub fn requested(args: &[std::ffi::OsString]) -> bool {
    args.iter().skip(1).any(|a| a == "-info" || a == "--info")
}

/// Answers `-info` on stdout and exits: 0 with a `RuntimeInfo`, 1 with the reason on stderr.
pub fn run() -> ! {
    let code = match answer().and_then(|info| {
        let bytes = info
            .write_to_bytes()
            .map_err(|e| Error::InvalidArgument(format!("encode the runtime info: {e}")))?;
        std::io::stdout()
            .write_all(&bytes)
            .map_err(Error::io("write the runtime info"))
    }) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{RUNTIME_ID} -info: {err}");
            1
        }
    };
    std::process::exit(code)
}

/// The `RuntimeInfo` for the options on stdin.
fn answer() -> Result<RuntimeInfo> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(Error::io("read the runtime options on stdin"))?;
    let options = if bytes.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&bytes).map_err(|e| {
            Error::InvalidArgument(format!("the options on stdin are not a protobuf Any: {e}"))
        })?)
    };
    let runtime = match options::from_request(options.as_ref())? {
        Requested::Oci(config) => Some(config),
        Requested::Nothing(_) if runs_as_runc_v2() => Some(OciConfig::runc_defaults()?),
        Requested::Nothing(_) | Requested::Host => None,
    };
    // As runc-v2: a runtime that cannot say (no `features` subcommand) leaves them out.
    let features = runtime.and_then(|config| {
        features(&config)
            .inspect_err(|err| eprintln!("{RUNTIME_ID} -info: {err}"))
            .ok()
    });
    Ok(RuntimeInfo {
        name: RUNTIME_ID.to_string(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        options: options.into(),
        features: features.into(),
        ..Default::default()
    })
}

/// `BINARY features`, as the `Any` containerd unmarshals into `features.Features`. A runtime
/// without the subcommand (youki, runsc) gets no features, as with runc-v2; one that hangs
/// is killed after [`FEATURES_DEADLINE`].
fn features(config: &OciConfig) -> Result<Any> {
    let name = config.binary.display();
    let mut child = Command::new(&config.binary)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(Error::io(format!("run {name} features")))?;
    let mut json = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let started = Instant::now();
        // `-info` is a process of its own with no reaper: waiting for its child is safe.
        #[allow(clippy::disallowed_methods)]
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > FEATURES_DEADLINE {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        json = reader.join().unwrap_or_default();
    }
    #[allow(clippy::disallowed_methods)] // no reaper here, as above
    let status = child
        .wait()
        .map_err(Error::io(format!("wait for {name} features")))?;
    if !status.success() || serde_json::from_slice::<serde_json::Value>(&json).is_err() {
        return Err(Error::FailedPrecondition(format!(
            "{name} features failed ({status}): the runtime reports no features"
        )));
    }
    Ok(Any {
        type_url: FEATURES_TYPE.to_string(),
        value: json,
        ..Default::default()
    })
}
