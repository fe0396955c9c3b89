//! The Kubernetes CRI calls a kubelet makes, over containerd's socket.
//!
//! containerd's CRI plugin serves the kubelet's Container Runtime Interface
//! (`runtime.v1.RuntimeService`, `runtime.v1.ImageService`) on the same socket as
//! containerd's own API. A kubelet runs a pod in this order, and so do `shim-demo pod` and
//! the integration tests: `RunPodSandbox` (the sandbox, a task of its own, is the pod),
//! then for each container `CreateContainer` and `StartContainer`; later `StopContainer`
//! (SIGTERM, then SIGKILL after a grace period), `RemoveContainer`, `StopPodSandbox`,
//! `RemovePodSandbox`. Everything lives in containerd's `k8s.io` namespace.
//!
//! The runtime a pod uses is its *handler* (a RuntimeClass's `handler`), a name the
//! containerd config maps to a shim: see "Run it from Kubernetes" in the README.

use std::{collections::HashMap, path::Path};

use anyhow::{anyhow, Result};
use containerd_client::tonic::{transport::Channel, Request};
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    CheckpointContainerRequest, ContainerConfig, ContainerFilter, ContainerMetadata,
    ContainerStatsRequest, ContainerStatus, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest, KeyValue,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStats, PodSandboxStatsRequest, PodSandboxStatus,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest, VersionRequest,
};

pub use containerd_client::tonic;
pub use k8s_cri::v1 as proto;

use crate::api::CallResult;

/// The namespace the CRI plugin keeps everything in.
pub const NAMESPACE: &str = "k8s.io";

/// The runtime handler name the demo and the tests configure for this shim.
pub const HANDLER: &str = "sample";

/// A CRI client on containerd's socket.
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// What a pod is made from: its name, where its logs go, and the pod annotations
/// containerd passes through to the shim (`pod_annotations` in the runtime's config).
#[derive(Debug, Clone)]
pub struct Pod {
    /// The pod's name (and, here, its uid).
    pub name: String,
    /// The Kubernetes namespace.
    pub namespace: String,
    /// Directory of the containers' CRI log files.
    pub log_directory: String,
    /// Annotations of the pod.
    pub annotations: HashMap<String, String>,
    /// The pod's cgroup, which a kubelet makes before it asks for the pod
    /// (`/kubepods/besteffort/pod<uid>` with the cgroupfs driver); empty: none.
    pub cgroup_parent: String,
}

impl Pod {
    /// The pod as a kubelet describes it: host network (no CNI here), and the rest default.
    pub fn config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: format!("{}-uid", self.name),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // None, as a kubelet gives a host-network pod: its UTS namespace is the node's
            // (and runc refuses a hostname without a UTS namespace of the pod's own).
            hostname: String::new(),
            log_directory: self.log_directory.clone(),
            annotations: self.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node.into(),
                        pid: NamespaceMode::Container.into(),
                        ipc: NamespaceMode::Pod.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A container of a pod: its name, image, command line and log file (relative to the
/// pod's log directory).
pub fn container(
    name: &str,
    image: &str,
    command: &[&str],
    env: &[(&str, &str)],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        envs: env
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// The `pid` in a verbose status's `info` JSON (0 when absent).
fn pid_in(info: &HashMap<String, String>) -> i32 {
    info.get("info")
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|info| info["pid"].as_i64())
        .unwrap_or(0) as i32
}

impl Cri {
    /// Connects to containerd's socket and checks that the CRI plugin answers: an installed
    /// containerd often has it disabled (`disabled_plugins = ["cri"]`).
    pub async fn connect(address: &Path) -> Result<Cri> {
        let channel = crate::api::channel(address).await?;
        let mut cri = Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        };
        cri.version().await.map_err(|status| {
            anyhow!(
                "containerd at {} does not serve the Kubernetes CRI API ({}: {}): is its CRI \
                 plugin disabled? (`disabled_plugins` in its config.toml)",
                address.display(),
                status.code(),
                status.message()
            )
        })?;
        Ok(cri)
    }

    /// `Version`: the runtime's name and version, as the kubelet logs them.
    pub async fn version(&mut self) -> CallResult<String> {
        let reply = self
            .runtime
            .version(VersionRequest::default())
            .await?
            .into_inner();
        Ok(format!("{} {}", reply.runtime_name, reply.runtime_version))
    }

    /// `Status`: the runtime's conditions (RuntimeReady, NetworkReady) as `name=true|false`.
    pub async fn status(&mut self) -> CallResult<Vec<String>> {
        let reply = self
            .runtime
            .status(StatusRequest::default())
            .await?
            .into_inner();
        Ok(reply
            .status
            .map(|s| {
                s.conditions
                    .iter()
                    .map(|c| format!("{}={}", c.r#type, c.status))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The CRI plugin's configuration as it reports it (verbose `Status`): JSON whose layout
    /// differs between containerd versions.
    pub async fn config(&mut self) -> CallResult<serde_json::Value> {
        let reply = self
            .runtime
            .status(StatusRequest { verbose: true })
            .await?
            .into_inner();
        Ok(reply
            .info
            .get("config")
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default())
    }

    /// True when the image is known to the CRI plugin.
    pub async fn has_image(&mut self, image: &str) -> CallResult<bool> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(self
            .images
            .image_status(request)
            .await?
            .into_inner()
            .image
            .is_some())
    }

    /// `RunPodSandbox` with `handler`: returns the sandbox id.
    pub async fn run_pod(&mut self, pod: &Pod, handler: &str) -> CallResult<String> {
        let request = RunPodSandboxRequest {
            config: Some(pod.config()),
            runtime_handler: handler.to_string(),
        };
        Ok(self
            .runtime
            .run_pod_sandbox(request)
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// `PodSandboxStatus`.
    pub async fn pod_status(&mut self, pod_id: &str) -> CallResult<PodSandboxStatus> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: false,
        };
        self.runtime
            .pod_sandbox_status(request)
            .await?
            .into_inner()
            .status
            .ok_or_else(|| containerd_client::tonic::Status::internal("no pod status"))
    }

    /// The pid of the pod's sandbox task (the pause process), from the verbose status.
    pub async fn pod_pid(&mut self, pod_id: &str) -> CallResult<i32> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.to_string(),
            verbose: true,
        };
        let info = self
            .runtime
            .pod_sandbox_status(request)
            .await?
            .into_inner()
            .info;
        Ok(pid_in(&info))
    }

    /// The pid of a container's init process, from the verbose status.
    pub async fn container_pid(&mut self, id: &str) -> CallResult<i32> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let info = self
            .runtime
            .container_status(request)
            .await?
            .into_inner()
            .info;
        Ok(pid_in(&info))
    }

    /// `ListPodSandbox`: ids of the pods named `name`, in any state.
    pub async fn pods_named(&mut self, name: &str) -> CallResult<Vec<String>> {
        let reply = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .into_inner();
        Ok(reply
            .items
            .into_iter()
            .filter(|pod| pod.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|pod| pod.id)
            .collect())
    }

    /// `ListContainers` of a pod: their ids.
    pub async fn containers_of(&mut self, pod_id: &str) -> CallResult<Vec<String>> {
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.to_string(),
                ..Default::default()
            }),
        };
        let reply = self.runtime.list_containers(request).await?.into_inner();
        Ok(reply.containers.into_iter().map(|c| c.id).collect())
    }

    /// `CreateContainer` in the pod: returns the container id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &Pod,
        config: ContainerConfig,
    ) -> CallResult<String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod.config()),
        };
        Ok(self
            .runtime
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    }

    /// `CheckpointContainer` (containerd 2.x; the kubelet's checkpoint API calls it): the
    /// running container saved, left running, into the archive at `location`.
    pub async fn checkpoint_container(&mut self, id: &str, location: &Path) -> CallResult<()> {
        let request = CheckpointContainerRequest {
            container_id: id.to_string(),
            location: location.display().to_string(),
            timeout: 60,
        };
        self.runtime.checkpoint_container(request).await?;
        Ok(())
    }

    /// `StartContainer`.
    pub async fn start_container(&mut self, id: &str) -> CallResult<()> {
        let request = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime.start_container(request).await?;
        Ok(())
    }

    /// `ContainerStatus`.
    pub async fn container_status(&mut self, id: &str) -> CallResult<ContainerStatus> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.runtime
            .container_status(request)
            .await?
            .into_inner()
            .status
            .ok_or_else(|| containerd_client::tonic::Status::internal("no container status"))
    }

    /// `ExecSync`: runs `cmd` in the container, waits at most `timeout_secs`, returns its
    /// stdout, stderr and exit code.
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> CallResult<ExecSyncResponse> {
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        Ok(self.runtime.exec_sync(request).await?.into_inner())
    }

    /// `ContainerStats`: (CPU nanoseconds, memory working set bytes).
    pub async fn container_stats(&mut self, id: &str) -> CallResult<(u64, u64)> {
        let request = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        let stats = self
            .runtime
            .container_stats(request)
            .await?
            .into_inner()
            .stats
            .unwrap_or_default();
        let cpu = stats
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value);
        let memory = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map_or(0, |v| v.value);
        Ok((cpu, memory))
    }

    /// `UpdateContainerResources`: new limits for a container (a kubelet sends them when a
    /// pod is resized).
    pub async fn update_container_resources(
        &mut self,
        id: &str,
        resources: LinuxContainerResources,
    ) -> CallResult<()> {
        let request = UpdateContainerResourcesRequest {
            container_id: id.to_string(),
            linux: Some(resources),
            ..Default::default()
        };
        self.runtime.update_container_resources(request).await?;
        Ok(())
    }

    /// `PodSandboxStats`: the pod's CPU and memory, and its containers'.
    pub async fn pod_sandbox_stats(&mut self, pod_id: &str) -> CallResult<PodSandboxStats> {
        let request = PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.to_string(),
        };
        self.runtime
            .pod_sandbox_stats(request)
            .await?
            .into_inner()
            .stats
            .ok_or_else(|| containerd_client::tonic::Status::internal("no pod stats"))
    }

    /// `StopContainer`: SIGTERM (the image's stop signal), SIGKILL after `grace_secs`.
    pub async fn stop_container(&mut self, id: &str, grace_secs: i64) -> CallResult<()> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_secs,
        };
        self.runtime.stop_container(Request::new(request)).await?;
        Ok(())
    }

    /// `RemoveContainer`.
    pub async fn remove_container(&mut self, id: &str) -> CallResult<()> {
        let request = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime.remove_container(request).await?;
        Ok(())
    }

    /// `StopPodSandbox`.
    pub async fn stop_pod(&mut self, pod_id: &str) -> CallResult<()> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: pod_id.to_string(),
        };
        self.runtime.stop_pod_sandbox(request).await?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub async fn remove_pod(&mut self, pod_id: &str) -> CallResult<()> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.to_string(),
        };
        self.runtime.remove_pod_sandbox(request).await?;
        Ok(())
    }
}
