//! `shim-demo cleanup`: remove everything the demo may have left (task, container, FIFOs,
//! the image it imported). Safe to run at any time.

use anyhow::Result;

use crate::{api::Containerd, fifo::FifoSet, image};

/// Removes task and container `id`, their FIFOs, and `image_name` if the demo imported it.
pub async fn run(api: &Containerd, id: &str, image_name: &str) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if api.task(id).await?.is_some() {
        let _ = api.kill(id, libc::SIGKILL as u32, true).await;
        let _ = api.wait(id).await;
        api.delete_task(id).await?;
        done.push(format!("deleted task {id}"));
    }
    if api.containers().await?.iter().any(|c| c.id == id) {
        api.delete_container(id).await?;
        done.push(format!("deleted container {id}"));
    }
    FifoSet::for_task(&api.address, &api.namespace, id).remove();
    if image::imported_by_demo(api, image_name).await? {
        image::remove(api, image_name).await?;
        done.push(format!("removed image {image_name}"));
    }
    Ok(done)
}
