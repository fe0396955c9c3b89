//! Walkthrough step: create the container. Metadata only: containerd alone, no shim yet.

use anyhow::{Context, Result};
use serde_json::json;

use super::{Observed, Tour};
use crate::{commands, RUNTIME};

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    let api = tour.api()?;
    let (id, image) = (tour.id.clone(), tour.options.image.clone());
    tour.ui.command(&format!(
        "ctr container create --runtime {RUNTIME} {image} {id}"
    ));
    api.create_container(&id, &image, RUNTIME)
        .await
        .with_context(|| format!("create container {id} (try `shim-demo cleanup` if it exists)"))?;
    tour.ui.command("ctr container ls");
    tour.ui.block(&commands::ls::table(api).await?);
    tour.check(
        api.task(&id).await?.is_none(),
        "the container has no task: no shim runs yet",
    )?;
    tour.ui.notice("a container is only a record (spec, image name, runtime). The shim's work begins with the task.");
    Ok(json!({ "container": id, "runtime": RUNTIME })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
