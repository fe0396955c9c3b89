//! Walkthrough step: an image in the store. The shim ignores it; containerd wants a name anyway.

use anyhow::Result;
use serde_json::json;

use super::{Observed, Tour};

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    let api = tour.api()?;
    let name = tour.options.image.clone();
    let imported = if api.image_exists(&name).await? {
        tour.ui.ok(&format!("{name} is already in the image store"));
        false
    } else {
        tour.ui.say(&format!(
            "{name} is not in the store, and no registry may be reachable. This shim runs a \
             host process and never looks at the image, so the demo imports a tiny, empty \
             image (a config and a manifest, no layers) under that name, offline."
        ));
        crate::image::import(api, &name).await?;
        tour.check(
            api.image_exists(&name).await?,
            &format!("imported {name} (it is removed at the end)"),
        )?;
        true
    };
    tour.ui.command("ctr image ls");
    Ok(json!({ "image": name, "imported": imported })
        .as_object()
        .cloned()
        .unwrap_or_default())
}
