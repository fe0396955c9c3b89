//! The runtime options of `Create`: which process model a container gets.
//!
//! containerd hands a runtime that is not runc its *generic* options,
//! `runtimeoptions.v1.Options` (containerd's
//! [`pkg/runtimeoptions/v1/api.proto`](https://github.com/containerd/containerd/blob/v1.6.20/pkg/runtimeoptions/v1/api.proto)):
//! a `config_path` naming a file, or (containerd 1.7 and later) its text as `config_body`.
//! `ctr run --runtime-config-path FILE` sends them, and so does a CRI handler whose
//! `options` say `ConfigPath = "FILE"`. gVisor's and Kata's shims are configured this way.
//!
//! The file is TOML, with these keys:
//!
//! ```toml
//! binary_name = "runc"    # an OCI runtime: a name on the shim's PATH, or a path
//! root = "/run/my-root"   # optional: the runtime's state directory
//! ```
//!
//! With `binary_name`, the container runs in the OCI mode (`model/oci/mod.rs`), through that runtime.
//! No options, or options with no file: the host mode (`model/host/mod.rs`), the default. Anything
//! else is refused with `InvalidArgument` naming the problem, never quietly run in the host
//! mode: a user who asked for isolation must not get a host process instead.

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::{
    rt::WireType, well_known_types::any::Any, CodedInputStream,
};

use crate::error::{Error, Result};

/// The type URL containerd gives `runtimeoptions.v1.Options`.
pub const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// Where an OCI runtime keeps its state by default: one directory per runtime binary (runc
/// and crun lay out their state differently) and containerd namespace, beside runc-v2's
/// `/run/containerd/runc/<namespace>`.
pub const DEFAULT_ROOT: &str = "/run/containerd/sample-oci";

/// The OCI mode's configuration, from the options file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciConfig {
    /// The runtime binary, resolved to an executable file.
    pub binary: PathBuf,
    /// Its state directory (`--root`), if the file names one.
    pub root: Option<PathBuf>,
}

impl OciConfig {
    /// The runtime's state directory for containers of `namespace`.
    pub fn root_for(&self, namespace: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.clone(),
            None => {
                let name = self.binary.file_name().unwrap_or_default();
                Path::new(DEFAULT_ROOT).join(name).join(namespace)
            }
        }
    }
}

/// The process model `Create`'s options ask for: `None` for the host mode.
pub fn from_request(options: Option<&Any>) -> Result<Option<OciConfig>> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(None);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS {
        return Err(Error::InvalidArgument(format!(
            "runtime options of type {:?}: this shim takes containerd's generic {RUNTIME_OPTIONS} \
             (a ConfigPath), or none",
            any.type_url
        )));
    }
    let (path, body) = decode(&any.value)?;
    let text = match (body.is_empty(), path.is_empty()) {
        (false, _) => body,
        (true, true) => return Ok(None),
        (true, false) => std::fs::read_to_string(&path).map_err(|e| {
            Error::InvalidArgument(format!("runtime config file {path:?} cannot be read: {e}"))
        })?,
    };
    let origin = if path.is_empty() { "ConfigBody" } else { &path };
    parse(&text, origin).map(Some)
}

/// The `config_path` (field 2) and `config_body` (field 3) of `runtimeoptions.v1.Options`;
/// `type_url` (field 1) names the runtime's own options type, which this shim has none of.
fn decode(bytes: &[u8]) -> Result<(String, String)> {
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        Error::InvalidArgument(format!(
            "runtime options are not a valid {RUNTIME_OPTIONS}: {e}"
        ))
    };
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), String::new());
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        match tag {
            // Field 2 and 3, length-delimited (wire type 2).
            0x12 => path = input.read_string().map_err(bad)?,
            0x1a => body = String::from_utf8_lossy(&input.read_bytes().map_err(bad)?).into(),
            _ => {
                let wire_type = WireType::new(tag & 7).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "runtime options are not a valid {RUNTIME_OPTIONS}: wire type {}",
                        tag & 7
                    ))
                })?;
                input.skip_field(wire_type).map_err(bad)?
            }
        }
    }
    Ok((path, body))
}

/// Parses the options file: `key = "string"` lines, comments and blank lines; every key
/// known. A TOML subset: the two keys are strings, and a real TOML parser would add a
/// dependency to every shim for two lines.
pub fn parse(text: &str, origin: &str) -> Result<OciConfig> {
    let bad = |line: usize, what: String| {
        Error::InvalidArgument(format!("runtime config {origin}, line {line}: {what}"))
    };
    let (mut binary, mut root) = (None, None);
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(
                line_no,
                format!("expected key = \"value\", got {line:?}"),
            ));
        };
        let key = key.trim();
        let value = value.trim();
        let value = match value.strip_prefix('"').and_then(|v| v.split_once('"')) {
            Some((inner, rest)) if rest.trim().is_empty() || rest.trim().starts_with('#') => {
                inner.to_string()
            }
            _ => {
                return Err(bad(
                    line_no,
                    format!("the value of {key:?} must be a quoted string, got {value}"),
                ))
            }
        };
        match key {
            "binary_name" => binary = Some(value),
            "root" if value.starts_with('/') => root = Some(PathBuf::from(value)),
            "root" => return Err(bad(line_no, format!("root {value:?} is not absolute"))),
            other => {
                return Err(bad(
                    line_no,
                    format!("unknown key {other:?} (known: binary_name, root)"),
                ))
            }
        }
    }
    let Some(binary) = binary.filter(|b| !b.is_empty()) else {
        return Err(Error::InvalidArgument(format!(
            "runtime config {origin}: no binary_name (the OCI runtime to run containers with, \
             e.g. binary_name = \"runc\")"
        )));
    };
    Ok(OciConfig {
        binary: resolve(&binary)?,
        root,
    })
}

/// A runtime binary: a path, or a name looked up on the shim's `PATH` (containerd's).
fn resolve(binary: &str) -> Result<PathBuf> {
    let executable = |path: &Path| {
        path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
    };
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(Error::InvalidArgument(format!(
                "binary_name {binary:?} is not an executable file"
            )))
        };
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "binary_name {binary:?} is not an executable on the shim's PATH ({path_var})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(path: &str, body: &str) -> Any {
        // Hand-encoded, as Go's protobuf would: field 2 then field 3.
        let mut value = Vec::new();
        for (tag, text) in [(0x12u8, path), (0x1a, body)] {
            if !text.is_empty() {
                value.push(tag);
                value.push(text.len() as u8);
                value.extend_from_slice(text.as_bytes());
            }
        }
        Any {
            type_url: RUNTIME_OPTIONS.into(),
            value,
            ..Default::default()
        }
    }

    fn invalid(result: Result<Option<OciConfig>>, needle: &str) {
        match result {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidArgument with {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn no_options_or_no_file_is_the_host_mode() {
        assert_eq!(from_request(None).expect("none"), None);
        assert_eq!(from_request(Some(&Any::default())).expect("empty"), None);
        assert_eq!(from_request(Some(&options("", ""))).expect("no path"), None);
    }

    #[test]
    fn a_file_with_binary_name_is_the_oci_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("oci.toml");
        std::fs::write(
            &file,
            "# ours\nbinary_name = \"sh\"  # on PATH\n\nroot = \"/run/x\"\n",
        )
        .expect("write");
        let config = from_request(Some(&options(&file.display().to_string(), "")))
            .expect("valid")
            .expect("OCI mode");
        assert!(config.binary.is_absolute() && config.binary.ends_with("sh"));
        assert_eq!(config.root_for("default"), PathBuf::from("/run/x"));
        let inline = from_request(Some(&options("", "binary_name = \"/bin/sh\"")))
            .expect("body")
            .expect("OCI mode");
        assert_eq!(
            inline.root_for("k8s.io"),
            Path::new(DEFAULT_ROOT).join("sh/k8s.io")
        );
    }

    #[test]
    fn bad_configurations_are_invalid_argument_naming_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.toml");
        invalid(
            from_request(Some(&options(&missing.display().to_string(), ""))),
            "cannot be read",
        );
        for (body, needle) in [
            (
                "binary_name = \"no-such-runtime-here\"",
                "not an executable",
            ),
            ("binary_name = \"/etc/passwd\"", "not an executable"),
            (
                "binary_name = \"runc\"\nsystemd = \"yes\"",
                "unknown key \"systemd\"",
            ),
            ("binary_name = runc", "quoted string"),
            ("root = \"/run/x\"", "no binary_name"),
            ("root = \"relative\"", "not absolute"),
            ("just words", "expected key"),
        ] {
            invalid(from_request(Some(&options("", body))), needle);
        }
        let runc_options = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x0a, 0x01, b'x'],
            ..Default::default()
        };
        invalid(
            from_request(Some(&runc_options)),
            "containerd.runc.v1.Options",
        );
        let garbage = Any {
            type_url: RUNTIME_OPTIONS.into(),
            value: vec![0x12, 0x7f],
            ..Default::default()
        };
        invalid(from_request(Some(&garbage)), "not a valid");
    }
}
