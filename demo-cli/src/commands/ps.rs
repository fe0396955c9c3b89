//! `shim-demo ps`: tasks, in `ctr task ls` columns.

use anyhow::Result;

use crate::api::Containerd;

/// The table `ctr task ls` prints.
pub async fn table(api: &Containerd) -> Result<String> {
    let mut text = format!("{:<16} {:<8} {}\n", "TASK", "PID", "STATUS");
    for task in api.tasks().await? {
        // containerd 1.6 fills `id` with the container id and leaves `container_id` empty.
        let name = if task.container_id.is_empty() {
            &task.id
        } else {
            &task.container_id
        };
        text += &format!(
            "{name:<16} {:<8} {}\n",
            task.pid,
            task.status().as_str_name()
        );
    }
    Ok(text)
}
