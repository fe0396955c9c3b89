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
