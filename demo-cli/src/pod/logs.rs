//! Pod tour step: the CRI log file. The shim writes the container's output to FIFOs; the
//! CRI plugin reads them and writes the kubelet's log format.

use std::{path::Path, time::Duration};

use anyhow::Result;
use serde_json::json;

use super::PodTour;
use crate::steps::{observed, Observed};

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let path = Path::new(&tour.pod.log_directory).join("clock.log");
    let mut lines = Vec::new();
    for _ in 0..250 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tour.ui.command(&format!("cat {}", path.display()));
    tour.ui.block(&lines.join("\n"));
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.splitn(4, ' ').collect()).collect();
    tour.check(
        !fields.is_empty()
            && fields
                .iter()
                .all(|f| f.len() == 4 && f[1] == "stdout" && f[2] == "F"),
        "each line is `<time> stdout F <text>`: the kubelet's format (`kubectl logs` reads it)",
    )?;
    tour.ui.notice(
        "the shim never sees this file. It gives the process pipes and copies them into the \
         FIFOs containerd created for the container; the CRI plugin reads those and writes \
         the file. A pod's log files live under its log directory, one per container.",
    );
    Ok(observed(json!({ "log_file": path, "lines": lines })))
}
