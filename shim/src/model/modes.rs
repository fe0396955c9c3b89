//! Which process model a container gets: the host mode, the default, or the OCI mode when
//! its runtime options name an OCI runtime (`model/options.rs`).
//!
//! Chosen per container, at `Create`, from its own options; a shim can serve both (a pod's
//! containers all come with their handler's options, so in practice one).

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use containerd_shim_protos::api::CreateTaskRequest;
use oci_spec::runtime::Spec;

use crate::{
    cgroup::Hierarchy,
    error::Result,
    model::host::Host,
    model::oci,
    model::options,
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
}

impl Modes {
    /// Both modes, the host mode being `host`.
    pub fn new(host: Host, router: Arc<Router>, namespace: &str) -> Modes {
        Modes {
            host,
            router,
            namespace: namespace.to_string(),
            cgroups: Hierarchy::detect(),
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
        match options::from_request(req.options.as_ref())? {
            None => self.host.container(req, spec, kind).await,
            Some(config) => oci::container(
                req,
                spec,
                &config,
                self.router.clone(),
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
