//! The runtime options of `Create`: which process model a container gets, and how its OCI
//! runtime is run.
//!
//! They arrive in one of two types:
//!
//! - **runc-v2's typed options**, `containerd.runc.v1.Options` (containerd's
//!   [`runtime/v2/runc/options/oci.proto`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/runc/options/oci.proto)):
//!   what containerd sends to `io.containerd.runc.v2`, from `ctr run --runc-binary ...` or from
//!   a CRI handler's `options` table. This shim installed as `containerd-shim-runc-v2` (or
//!   named by a handler's `runtime_path`) gets these, and runs the OCI mode with them, as
//!   runc-v2 would.
//! - **containerd's generic options**, `runtimeoptions.v1.Options` (containerd's
//!   [`pkg/runtimeoptions/v1/api.proto`](https://github.com/containerd/containerd/blob/v1.6.20/pkg/runtimeoptions/v1/api.proto)),
//!   what every other runtime type gets: a `config_path` naming a file, or (containerd 1.7
//!   and later, for a CRI handler's table) the table's text as `config_body`. `ctr run
//!   --runtime-config-path FILE` sends them, and so does a CRI handler whose `options` say
//!   `ConfigPath = "FILE"`. gVisor's and Kata's shims are configured this way.
//!
//! The file (or body) is TOML with runc-v2's option names, and one of ours:
//!
//! ```toml
//! mode = "host"              # the host mode; takes no other key
//! BinaryName = "runc"        # the OCI runtime: a name on the shim's PATH, or a path ("runc")
//! Root = "/run/my-root"      # its state directories: Root/<namespace>
//! SystemdCgroup = true       # the runtime's --systemd-cgroup (cgroupsPath "slice:prefix:name")
//! NoPivotRoot = false        # create --no-pivot
//! NoNewKeyring = false       # create --no-new-keyring
//! ShimCgroup = "/shims"      # the cgroup the shim moves itself into at `start`
//! IoUid = 1000               # the owner of the pipes a container's stdio goes through
//! IoGid = 1000
//! CriuPath = "/usr/sbin/criu"          # --criu; and checkpoints' default image and work paths
//! CriuImagePath = "/var/lib/ckpt"
//! CriuWorkPath = "/var/lib/ckpt-work"
//! ```
//!
//! `binary_name` and `root`, this shim's names before it took runc-v2's, still work.
//! Any runc-v2 key means the OCI mode (with runc unless `BinaryName` says otherwise), as
//! the typed options do. No options, or options that say nothing: [`Requested::Nothing`],
//! which `model/modes.rs` decides on. A key this shim does not know, or a value of the wrong
//! type, is refused with `InvalidArgument` naming it: a user who asked for isolation must not
//! get a host process instead.

use std::path::{Path, PathBuf};

use containerd_shim_protos::{
    protobuf::{rt::WireType, well_known_types::any::Any, CodedInputStream, Message},
    shim::oci::Options as RuncOptions,
};

use crate::error::{Error, Result};

/// The type URL containerd gives `runtimeoptions.v1.Options`.
pub const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// The type URL of runc-v2's typed options.
pub const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// The runtime runc-v2 runs when its options name none.
pub const DEFAULT_BINARY: &str = "runc";

/// Where an OCI runtime keeps its state when the options name no `Root`: one directory per
/// runtime binary (runc and crun lay out their state differently) and containerd namespace,
/// beside runc-v2's `/run/containerd/runc/<namespace>`.
pub const DEFAULT_ROOT: &str = "/run/containerd/sample-oci";

/// What `Create`'s options ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// Nothing about a model; says what arrived, for a refusal's message.
    Nothing(&'static str),
    /// The host mode, asked for by name (`mode = "host"`).
    Host,
    /// The OCI mode, with this runtime configuration.
    Oci(OciConfig),
}

/// The OCI mode's configuration: runc-v2's options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OciConfig {
    /// The runtime binary, resolved to an executable file.
    pub binary: PathBuf,
    /// The root of its state directories (`--root` is `<root>/<namespace>`), if named.
    pub root: Option<PathBuf>,
    /// Whether the runtime manages cgroups through systemd (`--systemd-cgroup`).
    pub systemd_cgroup: bool,
    /// `create --no-pivot`: a root filesystem on a ramdisk cannot be pivoted from.
    pub no_pivot_root: bool,
    /// `create --no-new-keyring`: the container keeps the caller's session keyring.
    pub no_new_keyring: bool,
    /// The cgroup the shim moves itself into at `start` (`task/shim.rs`), if any.
    pub shim_cgroup: Option<String>,
    /// The owner of the pipes the container's stdio goes through: the container's root
    /// user, seen from the host, when it has a user namespace.
    pub io_uid: u32,
    /// Their group, as `io_uid`.
    pub io_gid: u32,
    /// The CRIU binary the runtime checkpoints with (`--criu`), if not its default.
    pub criu_path: Option<PathBuf>,
    /// Where a checkpoint's image goes when its request names no place.
    pub criu_image_path: Option<PathBuf>,
    /// Where CRIU's work files (`dump.log`) go when the request names no place.
    pub criu_work_path: Option<PathBuf>,
}

impl OciConfig {
    /// runc-v2's defaults: `runc` from the shim's PATH, nothing else set.
    pub fn runc_defaults() -> Result<OciConfig> {
        Ok(OciConfig {
            binary: resolve(DEFAULT_BINARY)?,
            ..OciConfig::default()
        })
    }

    /// The runtime's state directory for containers of `namespace`: `<Root>/<namespace>`,
    /// as runc-v2's, so that the same id in two namespaces never meets in one directory.
    pub fn root_for(&self, namespace: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(namespace),
            None => {
                let name = self.binary.file_name().unwrap_or_default();
                Path::new(DEFAULT_ROOT).join(name).join(namespace)
            }
        }
    }
}

/// What the options of `Create` (or of `start`, or of `-info`) ask for.
pub fn from_request(options: Option<&Any>) -> Result<Requested> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(Requested::Nothing("no runtime options"));
    };
    match any.type_url.rsplit('/').next().unwrap_or_default() {
        RUNC_OPTIONS => {
            let typed = RuncOptions::parse_from_bytes(&any.value).map_err(|e| {
                Error::InvalidArgument(format!(
                    "runtime options are not a valid {RUNC_OPTIONS}: {e}"
                ))
            })?;
            Settings::from_typed(&typed).into_requested(RUNC_OPTIONS)
        }
        RUNTIME_OPTIONS => {
            let (path, body) = decode(&any.value)?;
            let (text, origin) = match (body.is_empty(), path.is_empty()) {
                (false, _) => (body, "ConfigBody".to_string()),
                (true, true) => {
                    return Ok(Requested::Nothing(
                        "containerd's generic options with neither ConfigPath nor ConfigBody",
                    ))
                }
                (true, false) => (
                    std::fs::read_to_string(&path).map_err(|e| {
                        Error::InvalidArgument(format!(
                            "runtime config file {path:?} cannot be read: {e}"
                        ))
                    })?,
                    path,
                ),
            };
            parse(&text, &origin)
        }
        _ => Err(Error::InvalidArgument(format!(
            "runtime options of type {:?}: this shim takes runc-v2's {RUNC_OPTIONS}, \
             containerd's generic {RUNTIME_OPTIONS} (a ConfigPath or ConfigBody), or none",
            any.type_url
        ))),
    }
}

/// The `config_path` (field 2) and `config_body` (field 3) of `runtimeoptions.v1.Options`;
/// `type_url` (field 1) names the runtime's own options type, which this shim does not need.
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

/// The options as read, from either source, before the binary is looked up.
#[derive(Debug, Default)]
struct Settings {
    /// `mode`, if said.
    mode: Option<String>,
    /// The runc-v2 keys said, in order (the host mode takes none).
    said: Vec<&'static str>,
    binary: Option<String>,
    root: Option<String>,
    config: OciConfig,
}

impl Settings {
    /// runc-v2's typed options: each field as runc-v2 reads it.
    fn from_typed(typed: &RuncOptions) -> Settings {
        let text = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        let path = |s: &str| text(s).map(PathBuf::from);
        // `criu_path` (field 8) is in containerd 1.6's and 1.7's proto, reserved since 2.0:
        // the crate's generated type keeps it as an unknown field.
        let criu_path = typed
            .special_fields
            .unknown_fields()
            .get(8)
            .and_then(|v| match v {
                containerd_shim_protos::protobuf::UnknownValueRef::LengthDelimited(b) => {
                    std::str::from_utf8(b).ok().map(str::to_string)
                }
                _ => None,
            });
        Settings {
            mode: Some("oci".into()),
            said: vec![],
            binary: text(&typed.binary_name),
            root: text(&typed.root),
            config: OciConfig {
                binary: PathBuf::new(),
                root: None,
                systemd_cgroup: typed.systemd_cgroup,
                no_pivot_root: typed.no_pivot_root,
                no_new_keyring: typed.no_new_keyring,
                shim_cgroup: text(&typed.shim_cgroup),
                io_uid: typed.io_uid,
                io_gid: typed.io_gid,
                criu_path: criu_path.as_deref().and_then(path),
                criu_image_path: path(&typed.criu_image_path),
                criu_work_path: path(&typed.criu_work_path),
            },
        }
    }

    /// The model these settings ask for; `origin` names them in errors.
    fn into_requested(self, origin: &str) -> Result<Requested> {
        let invalid =
            |what: String| Error::InvalidArgument(format!("runtime config {origin}: {what}"));
        let oci = match self.mode.as_deref() {
            Some("host") if self.said.is_empty() => return Ok(Requested::Host),
            Some("host") => {
                return Err(invalid(format!(
                    "mode = \"host\" runs host processes, which take no OCI runtime option \
                     (got {})",
                    self.said.join(", ")
                )))
            }
            Some("oci") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "mode {other:?}: the modes are \"host\" and \"oci\""
                )))
            }
            None => !self.said.is_empty(),
        };
        if !oci {
            return Ok(Requested::Nothing(
                "runtime options that name no mode and no runc option",
            ));
        }
        if let Some(root) = self.root.as_deref().filter(|r| !r.starts_with('/')) {
            return Err(invalid(format!("Root {root:?} is not absolute")));
        }
        let binary = self.binary.as_deref().unwrap_or(DEFAULT_BINARY);
        Ok(Requested::Oci(OciConfig {
            binary: resolve(binary)?,
            root: self.root.map(PathBuf::from),
            ..self.config
        }))
    }
}

/// One value of the file: TOML's string, boolean and integer, what runc-v2's options take.
enum Value {
    Text(String),
    Bool(bool),
    Int(i64),
}

/// Parses the options file or body: `key = value` lines, comments and blank lines; every
/// key known. A TOML subset (no tables, no escapes in strings): what containerd writes as a
/// handler's `ConfigBody`, and what a person writes for a dozen keys, without a TOML parser
/// in every shim.
pub fn parse(text: &str, origin: &str) -> Result<Requested> {
    let bad = |line: usize, what: String| {
        Error::InvalidArgument(format!("runtime config {origin}, line {line}: {what}"))
    };
    let mut settings = Settings::default();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(line_no, format!("expected key = value, got {line:?}")));
        };
        let key = key.trim();
        let value = value_of(value.trim()).ok_or_else(|| {
            bad(
                line_no,
                format!("the value of {key:?} is not a quoted string, true, false or a number"),
            )
        })?;
        let wrong = |kind: &str| bad(line_no, format!("{key} takes {kind}"));
        let text = |value: Value| match value {
            Value::Text(text) => Ok(text),
            _ => Err(wrong("a quoted string")),
        };
        let flag = |value: Value| match value {
            Value::Bool(flag) => Ok(flag),
            _ => Err(wrong("true or false")),
        };
        let id = |value: Value| match value {
            Value::Int(n) => u32::try_from(n).map_err(|_| wrong("a uid or gid (0 to 4294967295)")),
            _ => Err(wrong("a number")),
        };
        let config = &mut settings.config;
        let known: &'static str = match key {
            "mode" => {
                settings.mode = Some(text(value)?);
                continue;
            }
            "BinaryName" | "binary_name" => {
                settings.binary = Some(text(value)?).filter(|b| !b.is_empty());
                "BinaryName"
            }
            "Root" | "root" => {
                settings.root = Some(text(value)?).filter(|r| !r.is_empty());
                "Root"
            }
            "SystemdCgroup" => {
                config.systemd_cgroup = flag(value)?;
                "SystemdCgroup"
            }
            "NoPivotRoot" => {
                config.no_pivot_root = flag(value)?;
                "NoPivotRoot"
            }
            "NoNewKeyring" => {
                config.no_new_keyring = flag(value)?;
                "NoNewKeyring"
            }
            "ShimCgroup" => {
                config.shim_cgroup = Some(text(value)?).filter(|c| !c.is_empty());
                "ShimCgroup"
            }
            "IoUid" => {
                config.io_uid = id(value)?;
                "IoUid"
            }
            "IoGid" => {
                config.io_gid = id(value)?;
                "IoGid"
            }
            "CriuPath" => {
                config.criu_path = Some(text(value)?)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from);
                "CriuPath"
            }
            "CriuImagePath" => {
                config.criu_image_path = Some(text(value)?)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from);
                "CriuImagePath"
            }
            "CriuWorkPath" => {
                config.criu_work_path = Some(text(value)?)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from);
                "CriuWorkPath"
            }
            other => {
                return Err(bad(
                    line_no,
                    format!(
                        "unknown key {other:?} (known: mode, BinaryName, Root, SystemdCgroup, \
                         NoPivotRoot, NoNewKeyring, ShimCgroup, IoUid, IoGid, CriuPath, \
                         CriuImagePath, CriuWorkPath)"
                    ),
                ))
            }
        };
        settings.said.push(known);
    }
    settings.into_requested(origin)
}

/// A value as TOML writes it: `"text"` or `'text'` (containerd 2.x's `ConfigBody` uses the
/// latter), then only a comment; `true`, `false`, an integer.
fn value_of(value: &str) -> Option<Value> {
    for quote in ['"', '\''] {
        if let Some(quoted) = value.strip_prefix(quote) {
            let (inner, rest) = quoted.split_once(quote)?;
            let rest = rest.trim();
            return (rest.is_empty() || rest.starts_with('#'))
                .then(|| Value::Text(inner.to_string()));
        }
    }
    let bare = value.split('#').next().unwrap_or_default().trim();
    match bare {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        number => number.parse().ok().map(Value::Int),
    }
}

/// A runtime binary: a path, or a name looked up on the shim's `PATH` (containerd's).
pub fn resolve(binary: &str) -> Result<PathBuf> {
    let executable = |path: &Path| {
        path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
    };
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(Error::InvalidArgument(format!(
                "BinaryName {binary:?} is not an executable file"
            )))
        };
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "BinaryName {binary:?} is not an executable on the shim's PATH ({path_var})"
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

    fn typed(options: &RuncOptions) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{RUNC_OPTIONS}"),
            value: options.write_to_bytes().expect("encode"),
            ..Default::default()
        }
    }

    fn oci(result: Result<Requested>) -> OciConfig {
        match result {
            Ok(Requested::Oci(config)) => config,
            other => panic!("expected the OCI mode, got {other:?}"),
        }
    }

    fn invalid(result: Result<Requested>, needle: &str) {
        match result {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidArgument with {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn options_that_say_nothing_are_nothing_and_host_is_asked_by_name() {
        for options in [None, Some(Any::default()), Some(options("", ""))] {
            assert!(matches!(
                from_request(options.as_ref()),
                Ok(Requested::Nothing(_))
            ));
        }
        assert!(matches!(
            from_request(Some(&options("", "# only a comment\n"))),
            Ok(Requested::Nothing(_))
        ));
        assert_eq!(
            from_request(Some(&options("", "mode = \"host\""))).expect("host"),
            Requested::Host
        );
    }

    #[test]
    fn a_file_with_runc_v2_names_is_the_oci_mode_with_their_meaning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("oci.toml");
        std::fs::write(
            &file,
            "# ours\nBinaryName = \"sh\"  # on PATH\n\nRoot = \"/run/x\"\nSystemdCgroup = true\n\
             NoPivotRoot = true\nNoNewKeyring = false\nIoUid = 1000\nIoGid = 1001 # group\n\
             ShimCgroup = \"/shims\"\nCriuImagePath = \"/ckpt\"\n",
        )
        .expect("write");
        let config = oci(from_request(Some(&options(
            &file.display().to_string(),
            "",
        ))));
        assert!(config.binary.is_absolute() && config.binary.ends_with("sh"));
        assert_eq!(config.root_for("default"), PathBuf::from("/run/x/default"));
        assert!(config.systemd_cgroup && config.no_pivot_root && !config.no_new_keyring);
        assert_eq!((config.io_uid, config.io_gid), (1000, 1001));
        assert_eq!(config.shim_cgroup.as_deref(), Some("/shims"));
        assert_eq!(config.criu_image_path, Some(PathBuf::from("/ckpt")));
        // The names before runc-v2's still work (here in containerd 2.x's literal string);
        // the default root is per binary.
        let inline = oci(from_request(Some(&options("", "binary_name = '/bin/sh'"))));
        assert_eq!(
            inline.root_for("k8s.io"),
            Path::new(DEFAULT_ROOT).join("sh/k8s.io")
        );
    }

    #[test]
    fn a_runc_option_alone_means_runc_as_with_runc_v2() {
        // containerd 1.7's ConfigBody for a table `SystemdCgroup = false`.
        if resolve(DEFAULT_BINARY).is_err() {
            return invalid(
                from_request(Some(&options("", "SystemdCgroup = false"))),
                "\"runc\"",
            );
        }
        let config = oci(from_request(Some(&options("", "SystemdCgroup = false"))));
        assert!(config.binary.ends_with("runc"));
    }

    #[test]
    fn runc_v2_typed_options_are_read_field_by_field() {
        let mut options = RuncOptions::new();
        options.binary_name = "/bin/sh".into();
        options.root = "/run/typed".into();
        options.systemd_cgroup = true;
        options.no_new_keyring = true;
        options.io_uid = 7;
        options.criu_work_path = "/work".into();
        // containerd 1.6's criu_path, unknown to the 2.x proto the crate has.
        options
            .special_fields
            .mut_unknown_fields()
            .add_length_delimited(8, b"/opt/criu".to_vec());
        let config = oci(from_request(Some(&typed(&options))));
        assert_eq!(config.binary, PathBuf::from("/bin/sh"));
        assert_eq!(config.root_for("ns"), PathBuf::from("/run/typed/ns"));
        assert!(config.systemd_cgroup && config.no_new_keyring && !config.no_pivot_root);
        assert_eq!(config.io_uid, 7);
        assert_eq!(config.criu_path, Some(PathBuf::from("/opt/criu")));
        assert_eq!(config.criu_work_path, Some(PathBuf::from("/work")));
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
            ("BinaryName = \"no-such-runtime-here\"", "not an executable"),
            ("binary_name = \"/etc/passwd\"", "not an executable"),
            (
                "BinaryName = \"/bin/sh\"\nsystemd = \"yes\"",
                "unknown key \"systemd\"",
            ),
            ("BinaryName = runc", "not a quoted string"),
            (
                "SystemdCgroup = \"true\"",
                "SystemdCgroup takes true or false",
            ),
            ("IoUid = -1", "IoUid takes a uid"),
            ("IoUid = \"1000\"", "IoUid takes a number"),
            (
                "Root = \"relative\"\nBinaryName = \"/bin/sh\"",
                "not absolute",
            ),
            (
                "mode = \"host\"\nBinaryName = \"/bin/sh\"",
                "take no OCI runtime option (got BinaryName)",
            ),
            ("mode = \"vm\"", "the modes are"),
            ("just words", "expected key"),
        ] {
            invalid(from_request(Some(&options("", body))), needle);
        }
        let other = Any {
            type_url: "io.containerd.kata.v2.Options".into(),
            value: vec![0x0a, 0x01, b'x'],
            ..Default::default()
        };
        invalid(from_request(Some(&other)), "io.containerd.kata.v2.Options");
        let garbage = Any {
            type_url: RUNTIME_OPTIONS.into(),
            value: vec![0x12, 0x7f],
            ..Default::default()
        };
        invalid(from_request(Some(&garbage)), "not a valid");
    }
}
