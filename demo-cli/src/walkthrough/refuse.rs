//! Walkthrough step: containerd refuses to delete a running task.

use anyhow::Result;
use containerd_client::tonic::Code;
use serde_json::json;

use super::{Observed, Tour};

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    tour.ui.command(&format!("ctr task rm {}", tour.id));
    let refused = match tour.api()?.delete_task(&tour.id).await {
        Ok(code) => anyhow::bail!("the running task was deleted (exit code {code})"),
        Err(status) => status,
    };
    tour.ui
        .block(&format!("{:?}: {}", refused.code(), refused.message()));
    tour.check(
        refused.code() == Code::FailedPrecondition,
        "refused with FailedPrecondition",
    )?;
    tour.check(
        refused.message().contains("must be stopped"),
        "the message says the task must be stopped before deletion",
    )?;
    Ok(
        json!({ "code": format!("{:?}", refused.code()), "message": refused.message() })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}
