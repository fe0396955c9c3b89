//! A tiny OCI image, made offline.
//!
//! The machines that run the tests reach no registry, and the shim ignores the image anyway
//! (it runs host processes). `ctr container create` still wants an image in the store, so
//! the harness writes an OCI image layout with **no layers** (a config and a manifest) as a
//! tar archive for `ctr images import`. With no layers, unpacking mounts nothing.

use std::{io::Write, path::Path};

use anyhow::Result;
use sha2::{Digest, Sha256};

/// The image name the tests use: clearly not a real image.
pub const IMAGE: &str = "example.com/sample-shim/empty:latest";

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes an OCI archive holding one image called `name`.
pub fn write_oci_archive(path: &Path, name: &str) -> Result<()> {
    let arch = oci_arch();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": [] },
    })
    .to_string();
    let config_digest = digest(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [],
    })
    .to_string();
    let manifest_digest = digest(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": { "io.containerd.image.name": name },
        }],
    })
    .to_string();

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
    for blob in [&config, &manifest] {
        let hex = digest(blob.as_bytes())
            .trim_start_matches("sha256:")
            .to_string();
        add(&format!("blobs/sha256/{hex}"), blob.as_bytes())?;
    }
    archive.into_inner()?.flush()?;
    Ok(())
}

fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
