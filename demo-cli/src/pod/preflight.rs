//! Pod tour step: the CRI plugin answers, has a runtime handler for our shim, and has the
//! images the pod needs.
//!
//! The CRI plugin is part of containerd, but many installed configs disable it
//! (`disabled_plugins = ["cri"]`, Docker's containerd among them), and a pod can only use
//! our shim through a *runtime handler* configured for it. Either missing is exit code 2,
//! with what to change.

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use super::PodTour;
use crate::{
    api::Containerd,
    cri::{Cri, NAMESPACE},
    steps::{observed, Observed},
    ui, RUNTIME,
};

/// What to do when the CRI plugin does not answer.
pub const HOW_TO_ENABLE: &str = "Enable the CRI plugin (remove \"cri\" from `disabled_plugins` \
     in containerd's config.toml and restart it), or run `make demo-pod`, which starts a \
     private containerd with the CRI plugin and the handler configured.";

/// The handler's configuration, for the reader to paste.
fn how_to_configure(handler: &str) -> String {
    format!(
        "Add the runtime handler to containerd's config.toml and restart containerd; its \
         options file says which mode (`mode = \"host\"`, or `BinaryName = \"runc\"` for real \
         containers: the shim refuses a pod whose options say neither):\n\
         containerd 1.6/1.7 (version = 2):\n  \
           [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}]\n    \
             runtime_type = \"{RUNTIME}\"\n    \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}.options]\n      \
               ConfigPath = \"/etc/containerd/sample-host.toml\"\n\
         containerd 2.x (version = 3):\n  \
           [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.{handler}]\n    \
             runtime_type = \"{RUNTIME}\"\n    \
             [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.{handler}.options]\n      \
               ConfigPath = \"/etc/containerd/sample-host.toml\"\n\
         or run `make demo-pod`."
    )
}

/// Whether the options file at `path` asks for the host mode (`mode = "host"`): the shim's
/// rule (`model/options.rs`), read the same way. A file that cannot be read is taken as the
/// OCI mode's; the shim will say what is wrong with it.
fn asks_for_host(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().any(|line| {
            line.split('#')
                .next()
                .unwrap_or_default()
                .split_once('=')
                .is_some_and(|(k, v)| k.trim() == "mode" && v.trim() == "\"host\"")
        })
    })
}

pub async fn run(tour: &mut PodTour) -> Result<Observed> {
    let address = tour.options.address.clone();
    let handler = tour.options.handler.clone();
    tour.ui.say(
        "A kubelet talks to containerd's CRI plugin, never to a shim. The plugin turns each \
         pod and container into containerd containers and tasks of the pod's runtime: ours, \
         when the pod's RuntimeClass names a handler configured for it.",
    );
    let mut cri = Cri::connect(&address)
        .await
        .map_err(|err| anyhow!("{}\n{HOW_TO_ENABLE}", ui::error_text(&err)))?;
    let version = cri.version().await?;
    tour.ui.ok(&format!("the CRI plugin answers: {version}"));

    let config = cri.config().await?;
    let runtime_type = config["containerd"]["runtimes"][&handler]["runtimeType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if runtime_type != RUNTIME {
        let found = if runtime_type.is_empty() {
            "not configured".to_string()
        } else {
            format!("configured for {runtime_type}")
        };
        bail!(
            "the runtime handler {handler:?} is {found}.\n{}",
            how_to_configure(&handler)
        );
    }
    // The handler's options file says which mode: `mode = "host"`, or an OCI runtime.
    let options = config["containerd"]["runtimes"][&handler]["options"]["ConfigPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if options.is_empty() {
        bail!(
            "the runtime handler {handler:?} has no options file: the shim refuses a pod whose \
             options say no mode.\n{}",
            how_to_configure(&handler)
        );
    }
    tour.oci = !asks_for_host(&options);
    let mode = if tour.oci {
        "in the OCI mode (its options file names a runtime): real containers, through runc"
    } else {
        "in the host mode (its options file says mode = \"host\"): host processes"
    };
    tour.ui
        .ok(&format!("the handler {handler:?} runs {RUNTIME}, {mode}"));
    tour.ui
        .command("crictl info | jq .config.containerd.runtimes");

    // Kept from here on, so that the cleanup can remove what is imported below even if a
    // later check fails.
    tour.api = Some(Containerd::connect(&address, NAMESPACE).await?);
    let image = tour.options.image.clone();
    // containerd 1.x reports the sandbox image; 2.x pins it elsewhere and says nothing here.
    let sandbox_image = config["sandboxImage"].as_str().map(str::to_string);
    let mut wanted = vec![image.clone()];
    if let Some(sandbox) = sandbox_image.iter().find(|s| **s != image) {
        wanted.push(sandbox.clone());
    }
    for name in wanted {
        if cri.has_image(&name).await? {
            tour.ui
                .ok(&format!("{name} is in the {NAMESPACE} namespace"));
        } else if name == image {
            crate::image::import(tour.api()?, &name).await?;
            tour.imported.push(name.clone());
            // The CRI plugin learns of new images from containerd's events: wait until it
            // knows this one.
            for _ in 0..250 {
                if cri.has_image(&name).await? {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if !cri.has_image(&name).await? {
                bail!("imported {name}, but the CRI plugin does not list it");
            }
            tour.ui.ok(&format!(
                "imported the tiny, empty {name} into {NAMESPACE} (removed at the end): the \
                 shim runs host processes and never looks at an image"
            ));
        } else {
            bail!(
                "the CRI plugin's sandbox image {name} is not in the {NAMESPACE} namespace and \
                 no registry may be reachable: pull it (`ctr -n {NAMESPACE} images pull {name}`) \
                 or set `sandbox_image` to {image}. (`make demo-pod` does the latter.)"
            );
        }
    }
    tour.cri = Some(cri);
    Ok(observed(json!({
        "cri_version": version,
        "handler": handler,
        "runtime_type": runtime_type,
        "oci": tour.oci,
        "sandbox_image": sandbox_image,
    })))
}
