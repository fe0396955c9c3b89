//! `shim-demo create`: the container (metadata only; no shim runs yet).

use anyhow::{Context, Result};

use crate::{api::Containerd, image};

/// Makes sure `image_name` is in the store (importing the tiny image if not), then creates
/// container `id` for `runtime`.
pub async fn run(api: &Containerd, id: &str, image_name: &str, runtime: &str) -> Result<()> {
    if !api.image_exists(image_name).await? {
        image::import(api, image_name).await?;
        eprintln!("imported a tiny, empty image as {image_name} (the shim ignores images)");
    }
    api.create_container(id, image_name, runtime)
        .await
        .with_context(|| format!("create container {id}"))
}
