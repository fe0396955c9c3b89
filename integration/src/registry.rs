//! A read-only image registry on `127.0.0.1`, for containerd's own test suites: they pull
//! their images by name (`ghcr.io/containerd/busybox:1.36`, ...) and no registry is
//! reachable from these machines. It speaks the part of the OCI distribution API a pull
//! uses (`GET`/`HEAD` of `/v2/`, `/v2/<repository>/manifests/<tag or digest>` and
//! `/v2/<repository>/blobs/<digest>`), over plain HTTP, one thread per connection.
//!
//! containerd reaches it two ways: a daemon's `hosts.toml` naming it as the mirror of
//! `ghcr.io` and `registry.k8s.io` (so the names stay the upstream ones: the CRI suite), or
//! names on `127.0.0.1:<port>` (a client-side pull, which reads no `hosts.toml`: the client
//! suite's `--image-list`); containerd speaks plain HTTP to a loopback registry.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::Arc,
    thread,
};

use anyhow::{Context, Result};
use shim_demo::image::digest;

use crate::image::Image;

/// A registry serving images until the process exits.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub host: String,
}

/// What the registry serves: blobs by digest (with their media type), manifests' digests by
/// `repository:tag`.
#[derive(Default)]
struct Store {
    blobs: HashMap<String, (&'static str, Vec<u8>)>,
    tags: HashMap<String, String>,
}

impl Registry {
    /// Serves `images`, each under its name (`host/repository:tag`): the repository and tag
    /// are what the registry answers to, whatever the host (a mirror is asked for the
    /// upstream repository's path).
    pub fn serve(images: Vec<(&str, Image)>) -> Result<Registry> {
        let mut store = Store::default();
        for (name, image) in images {
            let (_, path) = name.split_once('/').context("a name has a host")?;
            let manifest = digest(&image.manifest);
            store.tags.insert(path.to_string(), manifest.clone());
            store
                .blobs
                .insert(manifest, (shim_demo::image::MANIFEST_TYPE, image.manifest));
            store.blobs.insert(
                digest(&image.config),
                (shim_demo::image::CONFIG_TYPE, image.config),
            );
            for layer in image.layers {
                store.blobs.insert(
                    digest(&layer),
                    ("application/vnd.oci.image.layer.v1.tar", layer),
                );
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let host = listener.local_addr()?.to_string();
        let store = Arc::new(store);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    let _ = answer(&store, stream);
                });
            }
        });
        Ok(Registry { host })
    }

    /// Writes the `hosts.toml` that makes this registry the mirror of `upstream` (such as
    /// `ghcr.io`) under `config_path`, the directory a daemon's registry `config_path` names.
    pub fn mirror(&self, config_path: &Path, upstream: &str) -> Result<()> {
        let dir = config_path.join(upstream);
        std::fs::create_dir_all(&dir)?;
        let hosts = format!(
            "server = \"https://{upstream}\"\n\n[host.\"http://{}\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n",
            self.host
        );
        std::fs::write(dir.join("hosts.toml"), hosts)?;
        Ok(())
    }
}

/// Answers one request on `stream`, then closes it.
fn answer(store: &Store, stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers: nothing in them changes the answer.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    // A mirror is asked `...?ns=<upstream>`.
    let path = target.split('?').next().unwrap_or("");
    let found = match path.strip_prefix("/v2/") {
        Some("") => Some(("application/json", b"{}".to_vec())),
        Some(rest) => lookup(store, rest),
        None => None,
    };
    let mut stream = stream;
    match found {
        Some((media_type, body)) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n\
                 Docker-Content-Digest: {}\r\n\
                 Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n\r\n",
                body.len(),
                digest(&body)
            )?;
            if method != "HEAD" {
                stream.write_all(&body)?;
            }
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n{}",
            if method == "HEAD" { "" } else { "{}" }
        )?,
    }
    Ok(stream.flush()?)
}

/// The blob `<repository>/manifests/<reference>` or `<repository>/blobs/<digest>` names.
fn lookup(store: &Store, rest: &str) -> Option<(&'static str, Vec<u8>)> {
    let (repository, reference) = match rest.rsplit_once("/manifests/") {
        Some((repository, reference)) => (repository, reference),
        None => ("", rest.rsplit_once("/blobs/")?.1),
    };
    let digest = if reference.starts_with("sha256:") {
        reference.to_string()
    } else {
        store
            .tags
            .get(&format!("{repository}:{reference}"))?
            .clone()
    };
    store.blobs.get(&digest).cloned()
}
