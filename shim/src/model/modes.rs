//! Which process model a container gets: the host mode or the OCI mode, from its runtime
//! options (`model/options.rs`), and what options that say nothing mean.
//!
//! Chosen per container, at `Create`, from its own options; a shim can serve both (a pod's
//! containers all come with their handler's options, so in practice one). Options that ask
//! for nothing mean:
//!
//! - for this binary installed as **`containerd-shim-runc-v2`** (containerd's runc shim's
//!   name, so that it stands in for it): what runc-v2 does, the OCI mode with `runc`;
//! - for a container of the **CRI plugin** (`io.kubernetes.cri.container-type`): a refusal
//!   ([`host_refused`]). A pod is expected to be isolated, and containerd 1.6 drops every
//!   key of a non-runc handler's table (`BinaryName`, `SystemdCgroup`) without a word: the
//!   host mode runs only when the options ask for it by name;
//! - otherwise (`ctr`, the tour): the host mode, the default.
use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use containerd_shim_protos::api::CreateTaskRequest;
use oci_spec::runtime::Spec;

use crate::{
    cgroup::Hierarchy,
    error::{Error, Result},
    model::host::Host,
    model::oci,
    model::options::{self, OciConfig, Requested},
    model::{Instance, ProcessModel},
    task::exits::Router,
    task::spec::Kind,
};

/// The shim's process models: [`Host`], and the OCI mode (`model/oci/mod.rs`).
pub struct Modes {
    /// The host mode.
    host: Host,
    /// Where the runtime's exits arrive (the OCI mode waits for its commands).
    router: Arc<Router>,
    /// The containerd namespace, part of the runtime's default state directory.
    namespace: String,
    /// The machine's cgroups, read for `Stats` and OOM events of OCI-mode containers.
    cgroups: Option<Hierarchy>,
    /// Whether this binary runs as `containerd-shim-runc-v2`: options that say nothing then
    /// mean runc-v2's defaults.
    as_runc_v2: bool,
}

/// The name containerd gives runc-v2's binary (`io.containerd.runc.v2`): installed under it,
/// this shim answers for runc-v2.
pub const RUNC_V2_BINARY: &str = "containerd-shim-runc-v2";

/// Whether this process runs under runc-v2's name ([`RUNC_V2_BINARY`]): its `argv[0]`, which
/// `start` passes on to the daemon (`/proc/self/exe` names the file, not the link).
pub fn runs_as_runc_v2() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .is_some_and(|arg0| arg0.file_name().is_some_and(|n| n == RUNC_V2_BINARY))
}

/// Why a CRI container with options that ask for nothing is refused, and the two ways out.
pub fn host_refused(received: &str) -> Error {
    Error::FailedPrecondition(format!(
        "refusing to run a Kubernetes container as host processes: the CRI plugin sent {received}. \
         containerd 1.6 drops every key of a non-runc handler's options table (BinaryName, \
         SystemdCgroup, ...), so the container would run on the host unisolated. For real \
         containers, name the OCI runtime in an options file (handler options ConfigPath = \
         \"FILE\", the file saying BinaryName = \"runc\"), or install this shim as {RUNC_V2_BINARY} \
         and use runtime_type = \"io.containerd.runc.v2\" with runc's options. For host \
         processes, say mode = \"host\" in the options file."
    ))
}

impl Modes {
    /// Both modes, the host mode being `host`.
    pub fn new(host: Host, router: Arc<Router>, namespace: &str) -> Modes {
        Modes {
            host,
            router,
            namespace: namespace.to_string(),
            cgroups: Hierarchy::detect(),
            as_runc_v2: runs_as_runc_v2(),
        }
    }
}

#[async_trait]
impl ProcessModel for Modes {
    async fn container(
        &self,
        req: &CreateTaskRequest,
        spec: &Spec,
        kind: &Kind,
    ) -> Result<Box<dyn Instance>> {
        let cri = matches!(kind, Kind::Sandbox | Kind::PodMember { .. });
        let requested = match options::from_request(req.options.as_ref())? {
            Requested::Nothing(_) if self.as_runc_v2 => Requested::Oci(OciConfig::runc_defaults()?),
            Requested::Nothing(received) if cri => return Err(host_refused(received)),
            requested => requested,
        };
        match requested {
            Requested::Nothing(_) | Requested::Host => self.host.container(req, spec, kind).await,
            Requested::Oci(config) => oci::container(
                req,
                spec,
                &config,
                self.router.clone(),
                self.host.registry(),
                &self.namespace,
                self.cgroups.as_ref(),
            ),
        }
    }

    async fn clean_up_after_crash(&self, bundle: &Path) -> i32 {
        match oci::clean_up_after_crash(bundle, self.router.clone()).await {
            Some(pid) => pid,
            None => self.host.clean_up_after_crash(bundle).await,
        }
    }
}
