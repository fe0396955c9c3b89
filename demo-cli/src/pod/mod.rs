//! `shim-demo pod`: the tour again, the way Kubernetes drives a shim.
//!
//! A kubelet never calls containerd's task API: it speaks the CRI API to containerd's CRI
//! plugin, which creates a *sandbox* per pod and then the pod's containers, each a task of
//! our runtime. This tour makes the same calls a kubelet makes for a pod of two
//! containers (`cri.rs`), and shows at each step what the shim does: the pause process, one
//! shim for the whole pod, the CRI log file written from the shim's FIFOs, `ExecSync`, a
//! stop with a grace period, and the removal that ends the shim.
//!
//! Like the walkthrough, each step is a small function in a file of its own, listed once in
//! `STEPS`; the cleanup runs last, whatever happened.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Result};

use crate::{
    api::Containerd,
    cri::{Cri, Pod},
    steps::{self, Step},
    ui::Ui,
};

mod cleanup;
mod containers;
mod exec;
mod logs;
mod namespaces;
pub mod preflight;
mod remove;
mod sandbox;
mod stop;

/// The pod's name (its sandbox's metadata name), which cleanup also looks for.
pub const POD_NAME: &str = "shim-demo-pod";

/// An id as `crictl` shows it: its first 12 characters.
pub fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// What the tour was asked to do.
pub struct Options {
    /// containerd's socket.
    pub address: PathBuf,
    /// The image the containers name (imported into `k8s.io` when absent).
    pub image: String,
    /// Directory for the pod's CRI log files; empty: a new one under /tmp, removed at the end.
    pub log_directory: PathBuf,
    /// The runtime handler configured for our shim.
    pub handler: String,
    /// No pauses.
    pub yes: bool,
    /// JSON output.
    pub json: bool,
}

/// The state the steps share.
pub struct PodTour {
    /// Output.
    pub ui: Ui,
    /// The options.
    pub options: Options,
    /// The CRI connection, once preflight made it.
    cri: Option<Cri>,
    /// containerd's own API in the `k8s.io` namespace (images).
    api: Option<Containerd>,
    /// The pod as a kubelet describes it.
    pub pod: Pod,
    /// The sandbox id, once the pod runs.
    pub pod_id: String,
    /// The containers: (name, id).
    pub containers: Vec<(String, String)>,
    /// The shim's pid, once the pod runs.
    pub shim: i32,
    /// The pause process's pid.
    pub pause: i32,
    /// Images the tour imported, removed by the cleanup.
    pub imported: Vec<String>,
    /// Whether the handler runs our shim in the OCI mode (its options name a config file):
    /// real containers instead of host processes.
    pub oci: bool,
}

impl PodTour {
    /// The CRI connection; steps after preflight can rely on it.
    pub fn cri(&mut self) -> Result<&mut Cri> {
        match &mut self.cri {
            Some(cri) => Ok(cri),
            None => bail!("not connected to containerd's CRI plugin"),
        }
    }

    /// containerd's API in the `k8s.io` namespace.
    pub fn api(&self) -> Result<&Containerd> {
        match &self.api {
            Some(api) => Ok(api),
            None => bail!("not connected to containerd"),
        }
    }

    /// The id of the container `name`.
    pub fn container(&self, name: &str) -> Result<String> {
        match self.containers.iter().find(|(n, _)| n == name) {
            Some((_, id)) => Ok(id.clone()),
            None => bail!("no container {name} was created"),
        }
    }

    /// Checks an expectation: prints it as held, or fails the step with it.
    pub fn check(&self, holds: bool, expectation: &str) -> Result<()> {
        self.ui.check(holds, expectation)
    }

    /// Polls a container until it is EXITED; returns its exit code.
    pub async fn wait_exited(&mut self, id: &str, limit: Duration) -> Result<i32> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = self.cri()?.container_status(id).await?;
            if status.state == crate::cri::proto::ContainerState::ContainerExited as i32 {
                return Ok(status.exit_code);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("container {id} did not exit within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The steps, in order.
const STEPS: &[Step<PodTour>] = &[
    Step {
        name: "preflight",
        title: "Is the CRI plugin there, with a handler for our shim?",
        run: |tour| Box::pin(preflight::run(tour)),
    },
    Step {
        name: "sandbox",
        title: "RunPodSandbox: the pod is a pause process",
        run: |tour| Box::pin(sandbox::run(tour)),
    },
    Step {
        name: "containers",
        title: "Two containers, one shim",
        run: |tour| Box::pin(containers::run(tour)),
    },
    Step {
        name: "namespaces",
        title: "Whose namespaces? The pod's, or the host's",
        run: |tour| Box::pin(namespaces::run(tour)),
    },
    Step {
        name: "log_file",
        title: "The log file the CRI plugin writes",
        run: |tour| Box::pin(logs::run(tour)),
    },
    Step {
        name: "exec_sync",
        title: "ExecSync: a probe's view",
        run: |tour| Box::pin(exec::run(tour)),
    },
    Step {
        name: "stop",
        title: "StopContainer with a grace period",
        run: |tour| Box::pin(stop::run(tour)),
    },
    Step {
        name: "removal",
        title: "Remove the containers, then the pod",
        run: |tour| Box::pin(remove::run(tour)),
    },
];

/// Runs the tour; returns the process exit code: 0, 1 (an expectation failed), 2 (the
/// preflight failed: no CRI plugin, no handler) or 130 (interrupted).
pub async fn run(mut options: Options) -> i32 {
    let ui = Ui::new(options.json, options.yes);
    let own_logs = options.log_directory.as_os_str().is_empty();
    if own_logs {
        options.log_directory =
            std::env::temp_dir().join(format!("shim-demo-pod.{}", std::process::id()));
    }
    // containerd resolves the log directory from its own working directory: make it
    // absolute.
    match std::fs::create_dir_all(&options.log_directory)
        .and_then(|()| options.log_directory.canonicalize())
    {
        Ok(absolute) => options.log_directory = absolute,
        Err(err) => {
            ui.fail(&format!(
                "create {}: {err}",
                options.log_directory.display()
            ));
            return 2;
        }
    }
    let pod = Pod {
        name: POD_NAME.to_string(),
        namespace: "default".to_string(),
        log_directory: options.log_directory.display().to_string(),
        annotations: Default::default(),
        cgroup_parent: String::new(),
    };
    let mut tour = PodTour {
        ui,
        options,
        cri: None,
        api: None,
        pod,
        pod_id: String::new(),
        containers: Vec::new(),
        shim: 0,
        pause: 0,
        imported: Vec::new(),
        oci: false,
    };
    let code = steps::run(&mut tour, ui, STEPS, |tour, number| {
        Box::pin(cleanup::run(tour, number))
    })
    .await;
    if own_logs {
        let _ = std::fs::remove_dir_all(&tour.options.log_directory);
    }
    code
}
