//! The tiny image: an OCI image with no layers, made and imported offline.
//!
//! containerd wants an image name on a container, and `ctr container create` wants the
//! image in the store; the shim ignores it (host processes). With no registry reachable, the
//! demo writes the two blobs an image needs (a config and a manifest) straight into
//! containerd's content store and names them in the image store:
//!
//! 1. a **lease** keeps the blobs from containerd's garbage collector until the image
//!    refers to them (requests carry it in the `containerd-lease` header);
//! 2. **Content.Write** stores each blob, with the digest it must have;
//! 3. **Images.Create** names the manifest; the manifest's
//!    `containerd.io/gc.ref.content.config` label keeps the config alive.

use std::collections::HashMap;

use anyhow::{Context, Result};
use containerd_client::{
    services::v1::{
        CreateImageRequest, DeleteImageRequest, DeleteRequest, GetImageRequest, Image, WriteAction,
        WriteContentRequest,
    },
    tonic::{metadata::MetadataValue, Code},
    types::Descriptor,
};
use sha2::{Digest, Sha256};

use crate::api::Containerd;

/// Label marking an image the demo imported, so that `cleanup` removes only its own.
pub const IMPORTED_LABEL: &str = "com.example.shim-demo/imported";

/// OCI media type of a manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI media type of an image config.
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The blobs of a layer-less image for this machine's architecture.
pub struct TinyImage {
    /// The image config (JSON).
    pub config: Vec<u8>,
    /// The manifest (JSON), pointing at the config and no layers.
    pub manifest: Vec<u8>,
}

impl Default for TinyImage {
    fn default() -> Self {
        Self::new()
    }
}

impl TinyImage {
    /// Builds the blobs.
    pub fn new() -> TinyImage {
        let config = serde_json::json!({
            "architecture": oci_arch(),
            "os": "linux",
            "config": { "Cmd": ["sh"] },
            "rootfs": { "type": "layers", "diff_ids": [] },
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": { "mediaType": CONFIG_TYPE, "digest": digest(&config), "size": config.len() },
            "layers": [],
        })
        .to_string()
        .into_bytes();
        TinyImage { config, manifest }
    }

    /// The manifest's descriptor, what an image name points at.
    pub fn manifest_descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": MANIFEST_TYPE,
            "digest": digest(&self.manifest),
            "size": self.manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
        })
    }
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Imports the tiny image as `name` (see the module docs).
pub async fn import(api: &Containerd, name: &str) -> Result<()> {
    let image = TinyImage::new();
    let lease = format!("shim-demo-{}", std::process::id());
    let leases = api.client().leases();
    leases
        .clone()
        .create(api.request(containerd_client::services::v1::CreateRequest {
            id: lease.clone(),
            labels: HashMap::new(),
        }))
        .await
        .context("create a lease")?;
    let result = async {
        let config_digest = digest(&image.config);
        write_blob(api, &lease, &image.config, HashMap::new()).await?;
        let labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest,
        )]);
        write_blob(api, &lease, &image.manifest, labels).await?;
        let target = Descriptor {
            media_type: MANIFEST_TYPE.into(),
            digest: digest(&image.manifest),
            size: image.manifest.len() as i64,
            ..Default::default()
        };
        let request = api.request(CreateImageRequest {
            image: Some(Image {
                name: name.into(),
                target: Some(target),
                labels: HashMap::from([(IMPORTED_LABEL.to_string(), "true".to_string())]),
                ..Default::default()
            }),
            ..Default::default()
        });
        match api.client().images().create(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(status).context("images.Create"),
        }
    }
    .await;
    let _ = leases
        .clone()
        .delete(api.request(DeleteRequest {
            id: lease,
            sync: false,
        }))
        .await;
    result
}

/// True when `name` is an image the demo imported (it carries [`IMPORTED_LABEL`]).
pub async fn imported_by_demo(api: &Containerd, name: &str) -> Result<bool> {
    let request = api.request(GetImageRequest { name: name.into() });
    match api.client().images().get(request).await {
        Ok(response) => Ok(response
            .into_inner()
            .image
            .is_some_and(|image| image.labels.contains_key(IMPORTED_LABEL))),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(status).context("images.Get"),
    }
}

/// Removes an image the demo imported (its blobs are then garbage collected).
pub async fn remove(api: &Containerd, name: &str) -> Result<()> {
    let request = api.request(DeleteImageRequest {
        name: name.into(),
        sync: false,
        ..Default::default()
    });
    match api.client().images().delete(request).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(status) => Err(status).context("images.Delete"),
    }
}

/// One blob, in one `Write` message: the whole data with `Commit`, checked against its digest.
async fn write_blob(
    api: &Containerd,
    lease: &str,
    data: &[u8],
    labels: HashMap<String, String>,
) -> Result<()> {
    let expected = digest(data);
    let message = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: format!("shim-demo-{expected}"),
        total: data.len() as i64,
        expected: expected.clone(),
        offset: 0,
        data: data.to_vec(),
        labels,
    };
    let mut request = api.request(tokio_stream::iter(vec![message]));
    request
        .metadata_mut()
        .insert("containerd-lease", MetadataValue::try_from(lease)?);
    match api.client().content().write(request).await {
        Ok(response) => {
            let mut responses = response.into_inner();
            while responses
                .message()
                .await
                .context("content.Write")?
                .is_some()
            {}
            Ok(())
        }
        Err(status) if status.code() == Code::AlreadyExists => Ok(()),
        Err(status) => Err(status).with_context(|| format!("content.Write {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_points_at_the_config_and_no_layers() {
        let image = TinyImage::new();
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], digest(&image.config));
        assert_eq!(manifest["layers"], serde_json::json!([]));
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
