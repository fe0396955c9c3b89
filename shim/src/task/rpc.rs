//! The ttrpc face of the task service: each RPC of containerd's `Task` service
//! ([`runtime/v2/task/shim.proto`](https://github.com/containerd/containerd/blob/v1.6.20/runtime/v2/task/shim.proto))
//! calls the task logic in [`Service`] and turns our error into a ttrpc status.
//!
//! | RPC | here |
//! |---|---|
//! | Create, Start, State, Wait, Kill, Delete, Pids, CloseIO, Connect, Shutdown | implemented |
//! | Exec, ResizePty, Pause, Resume, Stats, Update | implemented |
//! | Checkpoint | implemented in the OCI mode (runc and CRIU); refused in the host mode |

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::api::{self, Empty};
use log::{debug, info};

use crate::{
    error::{Error, Result},
    model,
    task::service::Service,
};

/// The task service as the daemon serves it over ttrpc (`task/daemon.rs`), as task API v2
/// and v3.
pub struct TaskService(pub Arc<Service>);

/// Runs `work` in a task of its own and waits for it: a request whose deadline passes, or
/// whose connection closes, drops this wait, never the work half-way (a `Create` that
/// reserved its id, a `Delete` that took its container out). For the RPCs that change a
/// container.
///
/// The work runs within the request's deadline as containerd sent it ([`model::deadline`]):
/// a runtime command that outlives it is killed and the RPC fails with the reason.
async fn to_the_end<T: Send + 'static>(
    ctx: &TtrpcContext,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(model::within_request(ctx.timeout_nano, work))
        .await
        .map_err(|err| Error::Io {
            context: "the request's task".to_string(),
            source: std::io::Error::other(err),
        })?
}

/// Logs the RPC's outcome and converts our error into a ttrpc status.
fn reply<T>(rpc: &str, result: Result<T>) -> TtrpcResult<T> {
    match result {
        Ok(value) => {
            debug!("{rpc}: ok");
            Ok(value)
        }
        Err(err) => {
            info!("{rpc}: {err} ({:?})", err.code());
            Err(err.into())
        }
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let service = self.0.clone();
        reply(
            "Create",
            to_the_end(ctx, async move { service.create(req).await }).await,
        )
    }

    async fn start(
        &self,
        ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let service = self.0.clone();
        reply(
            "Start",
            to_the_end(ctx, async move { service.start(req).await }).await,
        )
    }

    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        reply("State", self.0.state(req).await)
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        reply("Wait", self.0.wait(req).await)
    }

    async fn kill(&self, ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        let service = self.0.clone();
        let done = to_the_end(ctx, async move { service.kill(req).await }).await;
        reply("Kill", done.map(|()| Empty::new()))
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let service = self.0.clone();
        reply(
            "Delete",
            to_the_end(ctx, async move { service.delete(req).await }).await,
        )
    }

    async fn pids(
        &self,
        ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let pids = model::within_request(ctx.timeout_nano, self.0.pids(req));
        reply("Pids", pids.await)
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        reply("CloseIO", self.0.close_io(req).await.map(|()| Empty::new()))
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        reply("Connect", self.0.connect(req).await)
    }

    async fn shutdown(&self, _: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.0.shutdown().await;
        Ok(Empty::new())
    }

    async fn exec(&self, ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        let service = self.0.clone();
        let done = to_the_end(ctx, async move { service.exec(req).await }).await;
        reply("Exec", done.map(|()| Empty::new()))
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        reply(
            "ResizePty",
            self.0.resize_pty(req).await.map(|()| Empty::new()),
        )
    }

    async fn pause(&self, ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        let service = self.0.clone();
        let result = to_the_end(ctx, async move { service.set_paused(&req.id, true).await }).await;
        reply("Pause", result.map(|()| Empty::new()))
    }

    async fn resume(&self, ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        let service = self.0.clone();
        let result = to_the_end(ctx, async move { service.set_paused(&req.id, false).await }).await;
        reply("Resume", result.map(|()| Empty::new()))
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        reply("Stats", self.0.stats(req).await)
    }

    async fn update(&self, ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        let service = self.0.clone();
        let done = to_the_end(ctx, async move { service.update(req).await }).await;
        reply("Update", done.map(|()| Empty::new()))
    }

    async fn checkpoint(
        &self,
        ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        let service = self.0.clone();
        let done = to_the_end(ctx, async move { service.checkpoint(req).await }).await;
        reply("Checkpoint", done.map(|()| Empty::new()))
    }
}
