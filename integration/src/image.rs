//! The test images, as OCI image layout archives for `ctr images import`: the machines
//! that run the tests reach no registry.
//!
//! - [`IMAGE`]: the tiny, layer-less image `shim-demo` also uses (a config and a manifest:
//!   see `shim_demo::image`). The host mode ignores images, but `ctr container create`
//!   wants one in the store; with no layers, unpacking mounts nothing.
//! - [`BUSYBOX`]: a real root filesystem for the OCI mode, one layer of Debian's
//!   `busybox-static` with every applet.
//! - [`PAUSE`]: busybox plus a static `/pause`, a pod's sandbox image.

use std::{io::Write, path::Path};

use anyhow::Result;
use shim_demo::image::{digest, TinyImage};

/// The image name the tests use, `shim-demo`'s own: clearly not a real image.
pub const IMAGE: &str = shim_demo::DEFAULT_IMAGE;

/// Writes an OCI archive holding one image called `name`.
pub fn write_oci_archive(path: &Path, name: &str) -> Result<()> {
    let image = TinyImage::new();
    let mut descriptor = image.manifest_descriptor();
    descriptor["annotations"] = serde_json::json!({ "io.containerd.image.name": name });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [descriptor] }).to_string();
    pack(path, &index, &[&image.config, &image.manifest])
}

/// Writes the OCI image layout archive: `oci-layout`, the `index` and each blob under its
/// digest.
fn pack(path: &Path, index: &str, blobs: &[&Vec<u8>]) -> Result<()> {
    let mut archive = tar::Builder::new(std::fs::File::create(path)?);
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, name, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", index.as_bytes())?;
    for blob in blobs {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        add(&format!("blobs/sha256/{hex}"), blob)?;
    }
    archive.into_inner()?.flush()?;
    Ok(())
}

/// The image the OCI mode's tests run: busybox (Debian's `busybox-static`), one
/// uncompressed layer, made offline like [`IMAGE`].
pub const BUSYBOX: &str = "localhost/sample-shim-test/busybox:1";

/// Where the static busybox comes from.
pub const BUSYBOX_BINARY: &str = "/bin/busybox";

/// The applets linked to busybox in the image's `/bin`: all it has (`busybox --list`), as
/// in the busybox image critest and Kubernetes' tests expect (`top`, `nc`, `hostname`, ...).
fn applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(BUSYBOX_BINARY)
        .arg("--list")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(str::to_string)
        .collect())
}

/// The layer: `/bin/busybox`, its applets, `/etc/passwd` and the usual empty directories.
fn busybox_layer() -> Result<Vec<u8>> {
    let binary = std::fs::read(BUSYBOX_BINARY).map_err(|e| {
        anyhow::anyhow!(
            "read {BUSYBOX_BINARY}: {e} (the OCI mode's tests need Debian's busybox-static: \
             apt-get install busybox-static)"
        )
    })?;
    let mut layer = tar::Builder::new(Vec::new());
    for dir in ["bin", "dev", "etc", "proc", "root", "sys", "tmp"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        header.set_cksum();
        layer.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    let mut file = |name: &str, mode: u32, data: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        layer.append_data(&mut header, name, data)?;
        Ok(())
    };
    file("bin/busybox", 0o755, &binary)?;
    file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    for applet in applets()? {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        layer.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    Ok(layer.into_inner()?)
}

/// Writes an OCI archive holding the busybox image as `name`.
pub fn write_busybox_archive(path: &Path, name: &str) -> Result<()> {
    let config = serde_json::json!({ "Env": ["PATH=/bin"], "Cmd": ["sh"] });
    write_layered_archive(path, name, &[busybox_layer()?], config)
}

/// The pod sandbox's image for the OCI mode and runc: busybox and `/pause`, a static
/// pause process (the Kubernetes pause container's duty: wait, reap, exit on SIGTERM or
/// SIGINT), compiled here from C with the machine's `cc` and static libc.
pub const PAUSE: &str = "localhost/sample-shim-test/pause:1";

/// The pause program, in C (what Kubernetes' `pause.c` does, in a few lines).
const PAUSE_C: &str = r#"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction quitting = { .sa_handler = quit }, reaping = { .sa_handler = reap,
        .sa_flags = SA_NOCLDSTOP | SA_RESTART };
    sigaction(SIGINT, &quitting, 0);
    sigaction(SIGTERM, &quitting, 0);
    sigaction(SIGCHLD, &reaping, 0);
    for (;;) pause();
}
"#;

/// `/pause`, compiled statically.
fn pause_binary() -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("pause.c");
    let binary = dir.path().join("pause");
    std::fs::write(&source, PAUSE_C)?;
    let out = std::process::Command::new("cc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .map_err(|e| anyhow::anyhow!("run cc: {e} (apt-get install -y gcc libc6-dev)"))?;
    if !out.status.success() {
        anyhow::bail!(
            "cc -static pause.c failed (apt-get install -y gcc libc6-dev): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(std::fs::read(binary)?)
}

/// Writes an OCI archive holding the pause image as `name`.
pub fn write_pause_archive(path: &Path, name: &str) -> Result<()> {
    let mut layer = tar::Builder::new(Vec::new());
    let binary = pause_binary()?;
    let mut header = tar::Header::new_ustar();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    layer.append_data(&mut header, "pause", binary.as_slice())?;
    let config = serde_json::json!({ "Env": ["PATH=/bin"], "Entrypoint": ["/pause"] });
    write_layered_archive(path, name, &[busybox_layer()?, layer.into_inner()?], config)
}

/// Writes an OCI archive of one image `name`: uncompressed `layers` and the image config's
/// `config` part.
fn write_layered_archive(
    path: &Path,
    name: &str,
    layers: &[Vec<u8>],
    config: serde_json::Value,
) -> Result<()> {
    let arch = shim_demo::image::oci_arch();
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string()
    .into_bytes();
    let layer_descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|layer| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest(layer),
                "size": layer.len(),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": shim_demo::image::MANIFEST_TYPE,
        "config": {
            "mediaType": shim_demo::image::CONFIG_TYPE,
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": layer_descriptors,
    })
    .to_string()
    .into_bytes();
    let descriptor = serde_json::json!({
        "mediaType": shim_demo::image::MANIFEST_TYPE,
        "digest": digest(&manifest),
        "size": manifest.len(),
        "platform": { "architecture": arch, "os": "linux" },
        "annotations": { "io.containerd.image.name": name },
    });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [descriptor] }).to_string();
    let blobs: Vec<&Vec<u8>> = layers.iter().chain([&config, &manifest]).collect();
    pack(path, &index, &blobs)
}
