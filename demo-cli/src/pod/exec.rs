//! Pod tour step: `ExecSync`, what a liveness probe or `kubectl exec` without a terminal
//! does: an exec process in the container, its output and exit code.

use anyhow::{anyhow, Result};
use serde_json::json;

use super::{short, PodTour};
use crate::steps::{observed, Observed};

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let id = tour.container("clock")?;
    let command = ["sh", "-c", "echo probe ok; echo a warning >&2; exit 3"];
    tour.ui.command(&format!(
        "crictl exec --sync {} sh -c 'echo probe ok; echo a warning >&2; exit 3'",
        short(&id)
    ));
    let reply = tour
        .cri()?
        .exec_sync(&id, &command, 10)
        .await
        .map_err(|s| anyhow!("ExecSync: {}", s.message()))?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&reply.stdout).into_owned(),
        String::from_utf8_lossy(&reply.stderr).into_owned(),
    );
    tour.ui.block(&format!(
        "stdout: {stdout:?}\nstderr: {stderr:?}\nexit code: {}",
        reply.exit_code
    ));
    tour.check(
        stdout == "probe ok\n" && stderr == "a warning\n" && reply.exit_code == 3,
        "ExecSync returns the exec's own stdout, stderr and exit code",
    )?;
    tour.ui.notice(
        "the CRI plugin turned this into the task API's Exec, Start and Wait: the shim spawned \
         an exec process beside the container's, in the same pod's shim, with FIFOs of its own.",
    );
    Ok(observed(json!({
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": reply.exit_code,
    })))
}
