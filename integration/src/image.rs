//! The tiny OCI image as an archive for `ctr images import`.
//!
//! The machines that run the tests reach no registry, and the shim ignores the image anyway
//! (it runs host processes). `ctr container create` still wants an image in the store, so
//! the harness packs the layer-less image `shim-demo` also uses (a config and a manifest:
//! see `shim_demo::image`) into an OCI image layout archive. With no layers, unpacking
//! mounts nothing.

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
    for blob in [&image.config, &image.manifest] {
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

/// The applets linked to busybox in the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "ls", "true", "false", "ps", "id", "hostname", "setsid",
    "readlink", "yes", "head", "dd", "wc", "env", "kill", "pwd", "tty", "stat", "mount", "trap",
    "seq", "grep", "tail", "stty", "tr", "cut",
];

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
    for applet in APPLETS {
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
    let layer = busybox_layer()?;
    let config = serde_json::json!({
        "architecture": shim_demo::image::oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": { "type": "layers", "diff_ids": [digest(&layer)] },
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": shim_demo::image::MANIFEST_TYPE,
        "config": {
            "mediaType": shim_demo::image::CONFIG_TYPE,
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest(&layer),
            "size": layer.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let descriptor = serde_json::json!({
        "mediaType": shim_demo::image::MANIFEST_TYPE,
        "digest": digest(&manifest),
        "size": manifest.len(),
        "platform": { "architecture": shim_demo::image::oci_arch(), "os": "linux" },
        "annotations": { "io.containerd.image.name": name },
    });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [descriptor] }).to_string();
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
    for blob in [&layer, &config, &manifest] {
        let hex = digest(blob).trim_start_matches("sha256:").to_string();
        add(&format!("blobs/sha256/{hex}"), blob)?;
    }
    archive.into_inner()?.flush()?;
    Ok(())
}
