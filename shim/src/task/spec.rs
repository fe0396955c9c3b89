//! The bundle's `config.json` (an OCI runtime spec) and what the shim takes from it.
//!
//! containerd writes the spec into the bundle directory before it starts the shim. A runc
//! shim hands it to runc wholesale; this shim runs host processes, so it takes only the
//! spec's `process`: by default the [`DEFAULT_COMMAND`] (a date loop), run with the spec's environment,
//! working directory and user; with the annotation
//! `com.example.sample.process=spec` ([`PROCESS_ANNOTATION`]), the spec's own command line.
//! Its `process.oomScoreAdj` and rlimits apply too, and its `linux.cgroupsPath` and
//! `linux.resources` place and limit the task (`cgroup/mod.rs`). The rest of the spec (root
//! filesystem, namespaces, capabilities, seccomp) is ignored: **no isolation**. A process
//! runs on the host, as the user the spec names.

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use nix::sys::resource::Resource;
use oci_spec::runtime::{PosixRlimitType, Process, Spec};

use crate::error::{Error, Result};

/// File name of the spec inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// Largest `config.json` the shim reads. Real specs are a few KiB; the cap keeps a hostile or
/// broken bundle from making the shim allocate without bound.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// What a task runs unless told otherwise: print the date every five seconds, forever.
/// (The command of the Go sample this project grew from.)
pub const DEFAULT_COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "while date --rfc-3339=seconds; do sleep 5; done",
];

/// `PATH` for a spec that sets none (containerd's default spec always sets one).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The annotation that makes the init process the spec's `process` instead of the
/// [`DEFAULT_COMMAND`]: `ctr run --annotation com.example.sample.process=spec ...`.
pub const PROCESS_ANNOTATION: &str = "com.example.sample.process";

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// User id (`setuid`).
    pub uid: u32,
    /// Group id (`setgid`).
    pub gid: u32,
    /// Supplementary groups (`setgroups`).
    pub groups: Vec<u32>,
    /// File mode creation mask; 0o022 when the spec sets none.
    pub umask: u32,
}

/// One resource limit: (resource, soft, hard).
pub type Rlimit = (Resource, u64, u64);

/// What the shim needs to start a process: the init, or an exec.
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
    /// User, groups and umask, applied in the child in the order setgroups, setgid, setuid.
    pub identity: Identity,
    /// `noNewPrivileges`: `PR_SET_NO_NEW_PRIVS` before exec.
    pub no_new_privileges: bool,
    /// Resource limits to set before exec.
    pub rlimits: Vec<Rlimit>,
    /// Whether the process gets a terminal (a pty the shim allocates).
    pub terminal: bool,
    /// `oomScoreAdj`: how readily the kernel's OOM killer picks the process (the kubelet
    /// asks 1000 for BestEffort pods, 999 for Burstable ones); `None` for 0.
    pub oom_score_adj: Option<i32>,
}

/// The longest single argument or environment entry one `execve` accepts, terminating NUL
/// included: the kernel's `MAX_ARG_STRLEN`, 32 pages (128 KiB with 4 KiB pages).
pub fn max_arg_strlen() -> usize {
    32 * crate::sys::page_size() as usize
}

impl ProcessSpec {
    /// Checks that the kernel will `execve` this command line and environment, with the
    /// start-gate helper's own `extra` arguments in front, when one `execve` accepts
    /// `arg_max` bytes. A spec too large is the caller's input: it fails `Create` or `Exec`
    /// as `InvalidArgument` naming the limit, rather than as an `E2BIG` from deep inside
    /// the spawn.
    pub fn check_exec_size(&self, extra: &[&str], arg_max: usize) -> Result<()> {
        let max_arg_strlen = max_arg_strlen();
        let args = extra
            .iter()
            .copied()
            .chain(self.args.iter().map(String::as_str));
        let mut total = 0;
        let mut count = 0;
        for (i, arg) in args.enumerate() {
            let size = arg.len() + 1;
            if size > max_arg_strlen {
                return Err(Error::InvalidArgument(format!(
                    "argument {} is {size} bytes: the kernel accepts at most {max_arg_strlen} \
                     per argument (MAX_ARG_STRLEN)",
                    i.saturating_sub(extra.len())
                )));
            }
            total += size;
            count += 1;
        }
        for (key, value) in &self.env {
            let size = key.len() + 1 + value.len() + 1;
            if size > max_arg_strlen {
                return Err(Error::InvalidArgument(format!(
                    "environment variable {key} is {size} bytes: the kernel accepts at most \
                     {max_arg_strlen} per variable (MAX_ARG_STRLEN)"
                )));
            }
            total += size;
            count += 1;
        }
        // The argv and envp pointer arrays count too, each with its NULL terminator.
        total += (count + 2) * std::mem::size_of::<usize>();
        if total > arg_max {
            return Err(Error::InvalidArgument(format!(
                "the process's arguments and environment ({} variables) take {total} bytes: \
                 one execve accepts at most {arg_max} (ARG_MAX, a quarter of the stack limit)",
                self.env.len()
            )));
        }
        Ok(())
    }
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

/// The annotation containerd's CRI plugin sets on every container it creates: `sandbox` for
/// a pod's sandbox, `container` for the pod's containers.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The annotation naming the pod a CRI container belongs to (the sandbox's own id on the
/// sandbox). The shim groups a pod's containers by it: one shim per pod (`task/shim.rs`).
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Our own grouping annotation, for clients other than the CRI plugin
/// (`ctr run --annotation com.example.sample.group=NAME`): containers of one namespace with
/// the same value share a shim, as `io.containerd.runc.v2.group` does for runc's.
pub const GROUP_ANNOTATION: &str = "com.example.sample.group";

/// What a container is, from the annotations of its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A pod's sandbox (`container-type: sandbox`): the shim runs its pause process.
    Sandbox,
    /// A container of the pod `sandbox` (`container-type: container`): the spec's process.
    PodMember {
        /// The sandbox's id, which must be served by the same shim.
        sandbox: String,
    },
    /// Any other container (`ctr`, nerdctl, shim-demo): the [`DEFAULT_COMMAND`] unless
    /// [`PROCESS_ANNOTATION`] says `spec`.
    Plain,
}

/// The annotation `key` of the spec, if set.
pub fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// What the spec's annotations say the container is. An unknown `container-type` is
/// `InvalidArgument`: guessing could run a pod's sandbox as a program.
pub fn kind(spec: &Spec) -> Result<Kind> {
    match annotation(spec, CRI_CONTAINER_TYPE) {
        None => Ok(Kind::Plain),
        Some("sandbox") => Ok(Kind::Sandbox),
        Some("container") => {
            let sandbox = annotation(spec, CRI_SANDBOX_ID).unwrap_or_default();
            if sandbox.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "a container with {CRI_CONTAINER_TYPE}=container needs {CRI_SANDBOX_ID}"
                )));
            }
            Ok(Kind::PodMember {
                sandbox: sandbox.to_string(),
            })
        }
        Some(other) => Err(Error::InvalidArgument(format!(
            "unknown {CRI_CONTAINER_TYPE} {other:?}: expected \"sandbox\" or \"container\""
        ))),
    }
}

/// The shim a container goes to: containers with the same group (in one namespace) share
/// one. The pod's sandbox id for CRI containers, else [`GROUP_ANNOTATION`], else `id`.
pub fn group(spec: &Spec, id: &str) -> String {
    [CRI_SANDBOX_ID, GROUP_ANNOTATION]
        .iter()
        .find_map(|key| annotation(spec, key).filter(|v| !v.is_empty()))
        .unwrap_or(id)
        .to_string()
}

/// The init process of a container of `kind`: for a sandbox, the pause process (`helper`
/// run as `model/host/pause.rs`) with the spec's environment, working directory and user, whatever the
/// spec's command; for a pod's container, the spec's process; otherwise the
/// [`DEFAULT_COMMAND`] by default and the spec's own `process` with [`PROCESS_ANNOTATION`]
/// set to `spec`.
pub fn init_process(spec: &Spec, kind: &Kind, helper: &Path) -> Result<ProcessSpec> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("the spec has no process".into()))?;
    match kind {
        Kind::Sandbox => {
            let program = helper.display().to_string();
            let mut pause = process_spec(
                process,
                Some(&[program, crate::model::host::pause::SUBCOMMAND.into()]),
            )?;
            pause.args[0] = crate::model::host::pause::ARGV0.into();
            // An idle process needs no terminal, whatever the spec says.
            pause.terminal = false;
            Ok(pause)
        }
        Kind::PodMember { .. } => process_spec(process, None),
        Kind::Plain if annotation(spec, PROCESS_ANNOTATION) == Some("spec") => {
            process_spec(process, None)
        }
        Kind::Plain => process_spec(process, Some(&DEFAULT_COMMAND.map(String::from))),
    }
}

/// Turns an OCI `process` (from `config.json`, or from an `Exec` request) into what the shim
/// runs; `args` replaces the spec's command line when given.
pub fn process_spec(process: &Process, args: Option<&[String]>) -> Result<ProcessSpec> {
    let args: Vec<String> = match args {
        Some(args) => args.to_vec(),
        None => process.args().clone().unwrap_or_default(),
    };
    let program = args
        .first()
        .ok_or_else(|| Error::InvalidArgument("process.args is empty".into()))?
        .clone();
    let env: Vec<(String, String)> = process
        .env()
        .as_ref()
        .map(|vars| vars.iter().filter_map(|v| split_env(v)).collect())
        .unwrap_or_default();
    let cwd = process.cwd().clone();
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
    let user = process.user();
    Ok(ProcessSpec {
        program: resolve_program(&program, path_var)?,
        args,
        env,
        cwd,
        identity: Identity {
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(0o022),
        },
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        rlimits: process
            .rlimits()
            .as_ref()
            .map(|limits| {
                limits
                    .iter()
                    .map(|l| (rlimit_resource(l.typ()), l.soft(), l.hard()))
                    .collect()
            })
            .unwrap_or_default(),
        terminal: process.terminal().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
    })
}

/// The resource an OCI rlimit type names.
fn rlimit_resource(typ: PosixRlimitType) -> Resource {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => Resource::RLIMIT_CPU,
        RlimitFsize => Resource::RLIMIT_FSIZE,
        RlimitData => Resource::RLIMIT_DATA,
        RlimitStack => Resource::RLIMIT_STACK,
        RlimitCore => Resource::RLIMIT_CORE,
        RlimitRss => Resource::RLIMIT_RSS,
        RlimitNproc => Resource::RLIMIT_NPROC,
        RlimitNofile => Resource::RLIMIT_NOFILE,
        RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        RlimitAs => Resource::RLIMIT_AS,
        RlimitLocks => Resource::RLIMIT_LOCKS,
        RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        RlimitNice => Resource::RLIMIT_NICE,
        RlimitRtprio => Resource::RLIMIT_RTPRIO,
        RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Splits `KEY=value`; entries without `=` are dropped, as `execve` would ignore them.
pub fn split_env(var: &str) -> Option<(String, String)> {
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

    /// The helper path the shim passes (`/proc/self/exe`).
    const HELPER_PATH: &str = "/proc/self/exe";

    /// A spec running `false` (so any other command is visibly not the spec's), with
    /// `annotations`.
    fn spec_with(annotations: &[(&str, &str)]) -> Spec {
        let annotations = annotations
            .iter()
            .map(|(k, v)| format!("{k:?}:{v:?}"))
            .collect::<Vec<_>>()
            .join(",");
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","process":{{"cwd":"/","args":["false"],"user":{{"uid":0,"gid":0}},
                "env":["PATH=/usr/bin:/bin"]}},"annotations":{{{annotations}}}}}"#
        ))
        .expect("spec")
    }

    #[test]
    fn a_sandbox_runs_the_pause_process_whatever_its_spec_or_the_process_annotation_says() {
        let spec = spec_with(&[
            (CRI_CONTAINER_TYPE, "sandbox"),
            (CRI_SANDBOX_ID, "pod1"),
            (PROCESS_ANNOTATION, "spec"),
        ]);
        assert_eq!(kind(&spec).expect("kind"), Kind::Sandbox);
        let pause = init_process(&spec, &Kind::Sandbox, Path::new(HELPER_PATH)).expect("pause");
        assert_eq!(pause.program, Path::new(HELPER_PATH));
        assert_eq!(
            pause.args,
            [
                crate::model::host::pause::ARGV0,
                crate::model::host::pause::SUBCOMMAND
            ]
        );
        assert_eq!(
            pause.env,
            [("PATH".to_string(), "/usr/bin:/bin".to_string())]
        );
        assert_eq!(group(&spec, "pod1"), "pod1");
    }

    #[test]
    fn a_pod_container_runs_its_spec_and_goes_to_its_sandbox_s_shim() {
        let spec = spec_with(&[(CRI_CONTAINER_TYPE, "container"), (CRI_SANDBOX_ID, "pod1")]);
        let kind = kind(&spec).expect("kind");
        assert_eq!(
            kind,
            Kind::PodMember {
                sandbox: "pod1".into()
            }
        );
        assert_eq!(
            init_process(&spec, &kind, Path::new(HELPER_PATH))
                .expect("spec")
                .args,
            ["false"]
        );
        assert_eq!(group(&spec, "app"), "pod1");
    }

    #[test]
    fn other_containers_group_by_our_annotation_or_their_own_id() {
        let spec = spec_with(&[(GROUP_ANNOTATION, "g")]);
        assert_eq!(kind(&spec).expect("kind"), Kind::Plain);
        assert_eq!(group(&spec, "c1"), "g");
        assert_eq!(group(&spec_with(&[]), "c1"), "c1");
        let default = init_process(&spec, &Kind::Plain, Path::new(HELPER_PATH)).expect("default");
        assert_eq!(default.args, DEFAULT_COMMAND);
    }

    #[test]
    fn an_unknown_container_type_or_a_pod_container_without_its_pod_is_invalid() {
        for annotations in [
            &[(CRI_CONTAINER_TYPE, "podsandbox")][..],
            &[(CRI_CONTAINER_TYPE, "container")][..],
        ] {
            let err = kind(&spec_with(annotations)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(
                err.to_string().contains(CRI_CONTAINER_TYPE)
                    || err.to_string().contains(CRI_SANDBOX_ID),
                "{err}"
            );
        }
    }

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
    fn the_default_command_takes_env_and_cwd_from_the_spec_only() {
        let dir = bundle_with(
            br#"{"ociVersion":"1.0.2","process":{"cwd":"/tmp","args":["ignored"],"user":{"uid":0,"gid":0},
                 "env":["PATH=/usr/bin:/bin","HOME=/root","BROKEN"]}}"#,
        );
        let spec = read_spec(dir.path()).expect("valid spec");
        let process =
            init_process(&spec, &Kind::Plain, Path::new(HELPER_PATH)).expect("default process");
        assert_eq!(process.args, DEFAULT_COMMAND.map(String::from).to_vec());
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
    fn the_annotation_selects_the_specs_own_process() {
        let dir = bundle_with(
            br#"{"ociVersion":"1.0.2","annotations":{"com.example.sample.process":"spec"},
                 "process":{"cwd":"/","args":["true","x"],"user":{"uid":1000,"gid":100,
                 "additionalGids":[4,24],"umask":63},"noNewPrivileges":true,
                 "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}],
                 "env":["PATH=/usr/bin:/bin"]}}"#,
        );
        let process = init_process(
            &read_spec(dir.path()).expect("spec"),
            &Kind::Plain,
            Path::new(HELPER_PATH),
        )
        .expect("process");
        assert_eq!(process.args, ["true", "x"]);
        assert!(process.program.ends_with("true"));
        assert_eq!(
            process.identity,
            Identity {
                uid: 1000,
                gid: 100,
                groups: vec![4, 24],
                umask: 0o77
            }
        );
        assert!(process.no_new_privileges);
        assert_eq!(process.rlimits, vec![(Resource::RLIMIT_NOFILE, 512, 1024)]);
    }

    #[test]
    fn a_missing_binary_in_spec_mode_fails_with_its_name() {
        let dir = bundle_with(
            br#"{"ociVersion":"1.0.2","annotations":{"com.example.sample.process":"spec"},
                 "process":{"cwd":"/","args":["no-such-binary-anywhere"],"user":{"uid":0,"gid":0},
                 "env":["PATH=/usr/bin:/bin"]}}"#,
        );
        let err = init_process(
            &read_spec(dir.path()).expect("spec"),
            &Kind::Plain,
            Path::new(HELPER_PATH),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no-such-binary-anywhere"), "{err}");
    }

    #[test]
    fn an_environment_too_large_for_execve_is_invalid_argument_naming_the_limit() {
        let mut process = ProcessSpec {
            program: PathBuf::from("/bin/true"),
            args: vec!["true".into()],
            env: vec![],
            cwd: PathBuf::from("/"),
            identity: Identity::default(),
            no_new_privileges: false,
            rlimits: vec![],
            terminal: false,
            oom_score_adj: None,
        };
        let value = "v".repeat(1023);
        process.env = (0..2100)
            .map(|i| (format!("V{i}"), value.clone()))
            .collect();
        let limit = 2 * 1024 * 1024;
        let message = match process.check_exec_size(&["shim", "gate"], limit) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert!(
            message.contains("ARG_MAX") && message.contains(&limit.to_string()),
            "{message}"
        );
        process.env.truncate(1000);
        process
            .check_exec_size(&["shim", "gate"], limit)
            .expect("1000 variables fit");
        process.env = vec![("BIG".into(), "x".repeat(max_arg_strlen()))];
        let err = process.check_exec_size(&[], limit).unwrap_err();
        assert!(
            err.to_string().contains("BIG") && err.to_string().contains("MAX_ARG_STRLEN"),
            "{err}"
        );
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
