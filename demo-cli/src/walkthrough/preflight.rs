//! Walkthrough step: containerd answers, and can find the shim binary.
//!
//! containerd turns the runtime name `com.example.sample.v2` into the binary name
//! `containerd-shim-sample-v2` and looks for it on *its own* `PATH`. The demo finds the
//! daemon's pid from its socket and reads that `PATH` from `/proc/<pid>/environ`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use super::{Observed, Tour};
use crate::{api::Containerd, ui, RUNTIME};

/// What to do when containerd does not answer.
pub const HOW_TO_START: &str = "containerd is not reachable. Start one as root (`containerd &`, \
     or `systemctl start containerd`), point --address or CONTAINERD_ADDRESS at its socket, \
     or run `make demo`, which starts a private one.";

/// What to do when containerd cannot find the shim.
pub const HOW_TO_INSTALL: &str = "Build and install the shim where containerd looks: \
     `make shim && install target/shim/containerd-shim-sample-v2 /usr/local/bin/`.";

pub async fn run(tour: &mut Tour) -> Result<Observed> {
    let options = &tour.options;
    tour.ui.say(
        "A shim is a program containerd starts, one per task (or per pod, under Kubernetes). First: a containerd that \
         answers, and that can find our shim binary.",
    );
    let api = Containerd::connect(&options.address, &options.namespace)
        .await
        .map_err(|err| anyhow!("{}\n{HOW_TO_START}", ui::error_text(&err)))?;
    let version = api.version().await?;
    tour.ui.ok(&format!(
        "containerd {version} answers at {}",
        options.address.display()
    ));

    let binary = shim_binary_name(RUNTIME);
    let shim = match daemon_path(&options.address) {
        Some((pid, path_var)) => match find_on_path(&binary, &path_var) {
            Some(found) => {
                tour.ui.ok(&format!("containerd (pid {pid}) finds {binary} at {}", found.display()));
                found
            }
            None => bail!("containerd (pid {pid}) cannot find {binary} on its PATH ({path_var}).\n{HOW_TO_INSTALL}"),
        },
        None => {
            let ours = std::env::var("PATH").unwrap_or_default();
            match find_on_path(&binary, &ours) {
                Some(found) => {
                    tour.ui.say(&format!(
                        "(containerd's own PATH is not readable from here; {binary} is on ours, at {})",
                        found.display()
                    ));
                    found
                }
                None => bail!("{binary} is not on PATH.\n{HOW_TO_INSTALL}"),
            }
        }
    };
    tour.ui.notice(&format!(
        "the runtime name {RUNTIME} is all containerd needs: it runs {binary} for every task of it."
    ));
    tour.api = Some(api);
    super::collect_events(tour);
    Ok(json!({ "containerd_version": version, "shim": shim })
        .as_object()
        .cloned()
        .unwrap_or_default())
}

/// containerd's rule: `<...>.<name>.<version>` runs `containerd-shim-<name>-<version>`.
pub fn shim_binary_name(runtime: &str) -> String {
    let parts: Vec<&str> = runtime.split('.').collect();
    match parts.as_slice() {
        [.., name, version] => format!("containerd-shim-{name}-{version}"),
        _ => format!("containerd-shim-{runtime}"),
    }
}

/// The pid and `PATH` of the process listening on `socket`, found through
/// `/proc/net/unix` (socket inode) and `/proc/*/fd` (who holds it).
fn daemon_path(socket: &Path) -> Option<(i32, String)> {
    let wanted = socket.canonicalize().ok()?.display().to_string();
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(7) == Some(&wanted.as_str())).then(|| format!("socket:[{}]", cols[6]))
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if holds {
            let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
            let path = environ
                .split(|&b| b == 0)
                .find_map(|var| var.strip_prefix(b"PATH="))
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_else(|| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                });
            return Some((pid, path));
        }
    }
    None
}

fn find_on_path(binary: &str, path_var: &str) -> Option<PathBuf> {
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(binary))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_binaries_as_containerd_does() {
        assert_eq!(
            shim_binary_name("com.example.sample.v2"),
            "containerd-shim-sample-v2"
        );
        assert_eq!(
            shim_binary_name("io.containerd.runc.v2"),
            "containerd-shim-runc-v2"
        );
    }
}
