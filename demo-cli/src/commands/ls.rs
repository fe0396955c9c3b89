//! `shim-demo ls`: containers, in `ctr container ls` columns.

use anyhow::Result;

use crate::api::Containerd;

/// The table `ctr container ls` prints.
pub async fn table(api: &Containerd) -> Result<String> {
    let mut text = format!("{:<16} {:<36} {}\n", "CONTAINER", "IMAGE", "RUNTIME");
    for container in api.containers().await? {
        let runtime = container.runtime.map(|r| r.name).unwrap_or_default();
        text += &format!("{:<16} {:<36} {}\n", container.id, container.image, runtime);
    }
    Ok(text)
}
