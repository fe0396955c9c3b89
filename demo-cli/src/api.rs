//! The containerd gRPC calls the demo makes, each a small method.
//!
//! containerd's API is a set of gRPC services on one unix socket (`/run/containerd/
//! containerd.sock` by default). Every request names a *namespace* in the
//! `containerd-namespace` metadata header; `ctr` uses `default`. The services used here:
//! Containers (metadata), Tasks (running processes: this is where the shim is involved),
//! Content, Images and Leases (to import the tiny image), Events, Version.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use containerd_client::{
    services::v1::{
        container::Runtime, CheckpointTaskRequest, CloseIoRequest, Container,
        CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteProcessRequest,
        DeleteTaskRequest, ExecProcessRequest, GetImageRequest, GetRequest, KillRequest,
        ListContainersRequest, ListPidsRequest, ListTasksRequest, StartRequest, SubscribeRequest,
        UpdateTaskRequest, WaitRequest,
    },
    tonic::{self, codec::Streaming, metadata::MetadataValue, Code, Request},
    types::{v1::Process, Envelope},
    Client,
};

use crate::fifo::FifoSet;

/// Result of a call whose gRPC status the caller may want to look at (e.g. the
/// `FailedPrecondition` of deleting a running task).
pub type CallResult<T> = std::result::Result<T, tonic::Status>;

/// A connection to one containerd, in one namespace.
pub struct Containerd {
    client: Client,
    /// The namespace every request is made in.
    pub namespace: String,
    /// The socket we connected to.
    pub address: PathBuf,
}

/// A gRPC channel to containerd's socket: its own API and the CRI plugin's share it.
pub async fn channel(address: &Path) -> Result<tonic::transport::Channel> {
    containerd_client::connect(address).await.map_err(|err| {
        // tonic's error says only "transport error"; the reason (a missing socket, a
        // refused connection) is the innermost error of its chain.
        let reason = anyhow::Error::new(err).root_cause().to_string();
        anyhow!(
            "cannot connect to containerd at {}: {reason}",
            address.display()
        )
    })
}

impl Containerd {
    /// Connects and checks that the daemon answers (`Version`).
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self> {
        let client = Client::from(channel(address).await?);
        client
            .version()
            .version(())
            .await
            .with_context(|| format!("{} does not answer as containerd", address.display()))?;
        Ok(Containerd {
            client,
            namespace: namespace.to_string(),
            address: address.to_path_buf(),
        })
    }

    /// Wraps a message in a request for our namespace.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = MetadataValue::try_from(self.namespace.as_str()) {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }

    /// The underlying client, for services used once (content, leases, images).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let version = self.client.version().version(()).await?.into_inner();
        Ok(version.version)
    }

    /// True when the image store has `name`.
    pub async fn image_exists(&self, name: &str) -> Result<bool> {
        let request = self.request(GetImageRequest { name: name.into() });
        match self.client.images().get(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(status).context("images.Get"),
        }
    }

    /// Creates container `id` for `runtime`, naming `image`. The spec runs the shim's default
    /// command (the date loop) in the cgroup `ctr` would name, `/<namespace>/<id>`; there is
    /// no snapshot: the shim runs a host process and ignores the root filesystem.
    pub async fn create_container(&self, id: &str, image: &str, runtime: &str) -> CallResult<()> {
        let cgroup = format!("/{}/{id}", self.namespace);
        self.create_container_with_spec(id, image, runtime, &default_spec(&cgroup))
            .await
    }

    /// Like [`Containerd::create_container`], with the OCI spec (JSON) given.
    pub async fn create_container_with_spec(
        &self,
        id: &str,
        image: &str,
        runtime: &str,
        spec: &str,
    ) -> CallResult<()> {
        self.create_container_with_options(id, image, runtime, spec, None)
            .await
    }

    /// [`Containerd::create_container_with_spec`], with the runtime's `options` (containerd
    /// hands them to the shim in `Create`, as `ctr run --runtime-config-path` does).
    pub async fn create_container_with_options(
        &self,
        id: &str,
        image: &str,
        runtime: &str,
        spec: &str,
        options: Option<prost_types::Any>,
    ) -> CallResult<()> {
        let spec = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: spec.as_bytes().to_vec(),
        };
        let container = Container {
            id: id.into(),
            image: image.into(),
            runtime: Some(Runtime {
                name: runtime.into(),
                options,
            }),
            spec: Some(spec),
            ..Default::default()
        };
        let request = self.request(CreateContainerRequest {
            container: Some(container),
        });
        self.client.containers().create(request).await?;
        Ok(())
    }

    /// All containers of the namespace.
    pub async fn containers(&self) -> CallResult<Vec<Container>> {
        let request = self.request(ListContainersRequest::default());
        Ok(self
            .client
            .containers()
            .list(request)
            .await?
            .into_inner()
            .containers)
    }

    /// Deletes container `id` (its task must be gone).
    pub async fn delete_container(&self, id: &str) -> CallResult<()> {
        let request = self.request(DeleteContainerRequest { id: id.into() });
        self.client.containers().delete(request).await?;
        Ok(())
    }

    /// Creates the task of container `id`: containerd starts the shim, which creates the
    /// process. Returns its pid.
    pub async fn create_task(&self, id: &str, fifos: &FifoSet) -> CallResult<u32> {
        self.create_task_with_io(
            id,
            &fifos.stdin_path(),
            &fifos.stdout_path(),
            &fifos.stderr_path(),
        )
        .await
    }

    /// Creates the task of container `id` restored from the checkpoint image at
    /// `image_path` (runc-v2's task options with `CriuImagePath`, which containerd hands
    /// the shim as the checkpoint to restore). Returns its pid: 0 until `Start` restores.
    pub async fn create_task_restoring(
        &self,
        id: &str,
        fifos: &FifoSet,
        image_path: &Path,
    ) -> CallResult<u32> {
        let mut options = runc_options("runc");
        options
            .value
            .extend(length_delimited(10, &image_path.display().to_string()));
        let request = self.request(CreateTaskRequest {
            container_id: id.into(),
            stdin: fifos.stdin_path(),
            stdout: fifos.stdout_path(),
            stderr: fifos.stderr_path(),
            options: Some(options),
            ..Default::default()
        });
        Ok(self.client.tasks().create(request).await?.into_inner().pid)
    }

    /// Creates the task with stdio as given: FIFO paths, or log URIs (`file:///...`,
    /// `binary:///...`) for stdout and stderr, as `ctr run --log-uri` sends them.
    pub async fn create_task_with_io(
        &self,
        id: &str,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> CallResult<u32> {
        let request = self.request(CreateTaskRequest {
            container_id: id.into(),
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        });
        Ok(self.client.tasks().create(request).await?.into_inner().pid)
    }

    /// Starts the created task.
    pub async fn start_task(&self, id: &str) -> CallResult<u32> {
        let request = self.request(StartRequest {
            container_id: id.into(),
            ..Default::default()
        });
        Ok(self.client.tasks().start(request).await?.into_inner().pid)
    }

    /// The task of container `id`, if there is one.
    pub async fn task(&self, id: &str) -> CallResult<Option<Process>> {
        let request = self.request(GetRequest {
            container_id: id.into(),
            ..Default::default()
        });
        match self.client.tasks().get(request).await {
            Ok(response) => Ok(response.into_inner().process),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// All tasks of the namespace.
    pub async fn tasks(&self) -> CallResult<Vec<Process>> {
        let request = self.request(ListTasksRequest::default());
        Ok(self.client.tasks().list(request).await?.into_inner().tasks)
    }

    /// The pids of every process of the task (`Pids` on the shim).
    pub async fn pids(&self, id: &str) -> CallResult<Vec<u32>> {
        let request = self.request(ListPidsRequest {
            container_id: id.into(),
        });
        let processes = self
            .client
            .tasks()
            .list_pids(request)
            .await?
            .into_inner()
            .processes;
        Ok(processes.into_iter().map(|p| p.pid).collect())
    }

    /// Sends `signal` to the task's init process, or to all of its processes.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> CallResult<()> {
        let request = self.request(KillRequest {
            container_id: id.into(),
            signal,
            all,
            ..Default::default()
        });
        self.client.tasks().kill(request).await?;
        Ok(())
    }

    /// `Checkpoint`: the task's image, taken by its shim with runtime `options` (runc-v2's
    /// `containerd.runc.v1.CheckpointOptions`, encoded by the caller) and kept by containerd
    /// in its content store, unless the options name an image path; returns how many
    /// descriptors containerd wrote.
    pub async fn checkpoint(
        &self,
        id: &str,
        options: Option<prost_types::Any>,
    ) -> CallResult<usize> {
        let request = self.request(CheckpointTaskRequest {
            container_id: id.into(),
            options,
            ..Default::default()
        });
        let reply = self.client.tasks().checkpoint(request).await?;
        Ok(reply.into_inner().descriptors.len())
    }

    /// `Update`: new limits for the task's cgroup, `resources` being the runtime spec's
    /// `LinuxResources` as JSON, the way containerd's Go client sends them.
    pub async fn update(&self, id: &str, resources: &serde_json::Value) -> CallResult<()> {
        let request = self.request(UpdateTaskRequest {
            container_id: id.into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: resources.to_string().into_bytes(),
            }),
            ..Default::default()
        });
        self.client.tasks().update(request).await?;
        Ok(())
    }

    /// `CloseIO`: the task's stdin reaches end-of-file once pending input is delivered.
    /// (`ctr` never sends it; containerd's Go client does, in `CloseIO`.)
    pub async fn close_stdin(&self, id: &str) -> CallResult<()> {
        let request = self.request(CloseIoRequest {
            container_id: id.into(),
            stdin: true,
            ..Default::default()
        });
        self.client.tasks().close_io(request).await?;
        Ok(())
    }

    /// Adds an exec process `exec_id` running the OCI process `spec` (JSON), no stdio.
    pub async fn exec(&self, id: &str, exec_id: &str, spec: &str) -> CallResult<()> {
        let request = self.request(ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: spec.as_bytes().to_vec(),
            }),
            ..Default::default()
        });
        self.client.tasks().exec(request).await?;
        Ok(())
    }

    /// Starts exec process `exec_id`, waits for it and deletes it; returns its exit code.
    pub async fn run_exec(&self, id: &str, exec_id: &str) -> CallResult<u32> {
        let start = self.request(StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        });
        let wait = self.request(WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        });
        let mut tasks = self.client.tasks();
        tasks.start(start).await?;
        let code = tasks.wait(wait).await?.into_inner().exit_status;
        let delete = self.request(DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        });
        tasks.delete_process(delete).await?;
        Ok(code)
    }

    /// Waits for the task to exit; returns its exit code.
    pub async fn wait(&self, id: &str) -> CallResult<u32> {
        let request = self.request(WaitRequest {
            container_id: id.into(),
            ..Default::default()
        });
        Ok(self
            .client
            .tasks()
            .wait(request)
            .await?
            .into_inner()
            .exit_status)
    }

    /// Deletes the (stopped) task; returns its exit code.
    pub async fn delete_task(&self, id: &str) -> CallResult<u32> {
        let request = self.request(DeleteTaskRequest {
            container_id: id.into(),
        });
        Ok(self
            .client
            .tasks()
            .delete(request)
            .await?
            .into_inner()
            .exit_status)
    }

    /// Subscribes to events matching `filters` (containerd's filter syntax).
    pub async fn subscribe(&self, filters: &[&str]) -> CallResult<Streaming<Envelope>> {
        let request = self.request(SubscribeRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
        });
        Ok(self.client.events().subscribe(request).await?.into_inner())
    }
}

/// The OCI spec of the demo's container: as root, on the host, in cgroup `cgroups_path`.
/// The shim takes the environment and working directory from it and runs its default
/// command, the date loop.
pub fn default_spec(cgroups_path: &str) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh", "-c", "while date --rfc-3339=seconds; do sleep 5; done"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
        },
        "root": { "path": "rootfs" },
        "linux": { "cgroupsPath": cgroups_path },
    })
    .to_string()
}

/// The OCI spec of a real container (the OCI mode, through runc): `args` as root in the root
/// filesystem `root`, with its own pid, mount, IPC and UTS namespaces, in cgroup
/// `cgroups_path`: what `runc spec` makes, trimmed.
pub fn oci_spec(root: &std::path::Path, args: &[&str], cgroups_path: &str) -> String {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_NET_BIND_SERVICE",
    ];
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": true,
        },
        "root": { "path": root, "readonly": false },
        "hostname": "oci-demo",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
            ],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    })
    .to_string()
}

/// A gRPC error as one line: code and message.
pub fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A runtime's options, as containerd stores them on a container: a protobuf `Any`.
pub type RuntimeOptions = prost_types::Any;

/// containerd's generic runtime options, `runtimeoptions.v1.Options`, naming the options
/// file `config_path` (field 2): what `ctr run --runtime-config-path` sends, and what
/// selects our shim's OCI mode when the file names a `binary_name`.
pub fn runtime_options(config_path: &str) -> prost_types::Any {
    prost_types::Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value: length_delimited(2, config_path),
    }
}

/// runc-v2's own options, `containerd.runc.v1.Options`, with `binary_name` (field 6): the
/// OCI runtime containerd's runc shim runs (`crun`, ...).
pub fn runc_options(binary_name: &str) -> prost_types::Any {
    prost_types::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: length_delimited(6, binary_name),
    }
}

/// One protobuf string field: its key, its length as a varint, its bytes.
fn length_delimited(field: u8, text: &str) -> Vec<u8> {
    let mut out = vec![field << 3 | 2];
    let mut len = text.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(text.as_bytes());
    out
}
