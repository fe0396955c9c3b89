//! The bundle's `config.json` (an OCI runtime spec) and what the shim takes from it.
//!
//! containerd writes the spec into the bundle directory before it starts the shim. A runc
//! shim hands it to runc wholesale; this shim runs host processes, so it takes only the
//! process's environment and working directory, and runs the seed's hardcoded loop. The
//! rest of the spec (root filesystem, namespaces, cgroups) is ignored: **no isolation**.

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// File name of the spec inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// Largest `config.json` the shim reads. Real specs are a few KiB; the cap keeps a hostile or
/// broken bundle from making the shim allocate without bound.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The seed's command: print the date every five seconds, forever.
pub const SEED_COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "while date --rfc-3339=seconds; do sleep 5; done",
];

/// `PATH` for a spec that sets none (containerd's default spec always sets one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the shim needs to start the task's init process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Absolute path of the program, resolved at `Create` so a missing binary fails there.
    pub program: PathBuf,
    /// Full argument vector, `argv[0]` included.
    pub args: Vec<String>,
    /// The environment, exactly as the spec gives it: nothing of the shim's leaks in.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// Reads and parses `<bundle>/config.json`. Missing, oversized or malformed files are
/// `InvalidArgument` with the file named, since they are the caller's input.
pub fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join(CONFIG_FILE);
    let invalid = |why: String| Error::InvalidArgument(format!("{}: {why}", path.display()));
    let file = fs::File::open(&path).map_err(|e| invalid(format!("cannot open: {e}")))?;
    let mut content = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    if content.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    serde_json::from_slice(&content).map_err(|e| invalid(format!("not a valid OCI spec: {e}")))
}

/// The seed's loop, run with the spec's environment and working directory.
pub fn seed_process(spec: &Spec) -> Result<ProcessSpec> {
    let process = spec.process().as_ref();
    let env: Vec<(String, String)> = process
        .and_then(|p| p.env().as_ref())
        .map(|vars| vars.iter().filter_map(|v| split_env(v)).collect())
        .unwrap_or_default();
    let cwd = process
        .map(|p| p.cwd().clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    if !cwd.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "process.cwd {} is not a directory on the host (this shim runs host processes)",
            cwd.display()
        )));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    Ok(ProcessSpec {
        program: resolve_program(SEED_COMMAND[0], path_var)?,
        args: SEED_COMMAND.iter().map(|s| s.to_string()).collect(),
        env,
        cwd,
    })
}

/// Splits `KEY=value`; entries without `=` are dropped, as `execve` would ignore them.
fn split_env(var: &str) -> Option<(String, String)> {
    let (key, value) = var.split_once('=')?;
    (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
}

/// Finds `program` the way `execvp` would, using the *task's* `PATH`, so that a missing
/// binary is reported by `Create` instead of by a process that dies right after `Start`.
pub fn resolve_program(program: &str, path_var: &str) -> Result<PathBuf> {
    let is_executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::InvalidArgument(format!(
                "executable {program} not found or not executable"
            )))
        };
    }
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "executable {program:?} not found in PATH={path_var}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn bundle_with(config: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(CONFIG_FILE), config).expect("write config");
        dir
    }

    fn invalid_message(result: Result<Spec>) -> String {
        match result {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn missing_config_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let message = invalid_message(read_spec(dir.path()));
        assert!(message.contains("config.json"), "{message}");
        assert!(message.contains("cannot open"), "{message}");
    }

    #[test]
    fn malformed_config_names_the_file() {
        let dir = bundle_with(b"{ not json");
        let message = invalid_message(read_spec(dir.path()));
        assert!(message.contains(&dir.path().join("config.json").display().to_string()));
        assert!(message.contains("not a valid OCI spec"), "{message}");
    }

    #[test]
    fn oversized_config_is_refused_before_parsing() {
        let dir = bundle_with(&vec![b' '; MAX_CONFIG_BYTES as usize + 1]);
        let message = invalid_message(read_spec(dir.path()));
        assert!(message.contains("larger than"), "{message}");
    }

    #[test]
    fn seed_process_takes_env_and_cwd_from_the_spec_only() {
        let dir = bundle_with(
            br#"{"ociVersion":"1.0.2","process":{"cwd":"/tmp","args":["ignored"],"user":{"uid":0,"gid":0},
                 "env":["PATH=/usr/bin:/bin","HOME=/root","BROKEN"]}}"#,
        );
        let spec = read_spec(dir.path()).expect("valid spec");
        let process = seed_process(&spec).expect("seed process");
        assert_eq!(process.args, SEED_COMMAND.map(String::from).to_vec());
        assert_eq!(process.cwd, PathBuf::from("/tmp"));
        assert_eq!(
            process.env,
            vec![
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("HOME".to_string(), "/root".to_string())
            ]
        );
        assert!(process.program.ends_with("sh"));
    }

    #[test]
    fn a_program_missing_from_path_is_invalid_argument() {
        let err = resolve_program("no-such-program-here", "/usr/bin:/bin").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref m) if m.contains("no-such-program-here")));
        assert!(resolve_program("/no/such/binary", "").is_err());
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin").expect("sh"),
            PathBuf::from("/bin/sh")
        );
    }
}
