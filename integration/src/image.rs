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
/// Each is a link to `/bin/busybox`, absolute, as in alpine (a test of image volumes
/// counts on `bin/sh` pointing out of its directory).
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

/// The busybox image's `/etc/passwd` (upstream's, 1.36).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";

/// The busybox image's `/etc/group` (upstream's, 1.36): `root` is in `wheel`, as tests of
/// supplementary groups expect.
const GROUP: &str = "root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nobody:x:65534:
";

/// The layer: `/bin/busybox`, its applets, `/etc/passwd`, `/etc/group` and the usual empty
/// directories.
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
    file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    file("etc/group", 0o644, GROUP.as_bytes())?;
    for applet in applets()? {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        layer.append_link(&mut header, format!("bin/{applet}"), "/bin/busybox")?;
    }
    Ok(layer.into_inner()?)
}

/// Writes an OCI archive holding the busybox image as `name`.
pub fn write_busybox_archive(path: &Path, name: &str) -> Result<()> {
    busybox()?.write_archive(path, name)
}

/// The busybox image: one layer, `sh` as its command.
fn busybox() -> Result<Image> {
    let config = serde_json::json!({ "Env": ["PATH=/bin"], "Cmd": ["sh"] });
    Ok(Image::new(vec![busybox_layer()?], config))
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
    static_binary(PAUSE_C)
}

/// `stress -m 1 --vm-bytes <N>M ... -t <seconds>`, what containerd's CRI suite runs in its
/// resource consumer: holds N MiB, touched, for that long (the other options are taken as
/// given), plus the few MiB stress's own two processes (it forks a worker) add: the test
/// waits for the container's working set to pass its first figure plus N MiB.
const STRESS_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long mib = 256, seconds = 30;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--vm-bytes")) mib = atol(argv[i + 1]);
        if (!strcmp(argv[i], "-t")) seconds = atol(argv[i + 1]);
    }
    long bytes = (mib + 4) << 20;
    /* volatile: the pages are written, not optimized away. */
    volatile char *memory = malloc(bytes);
    if (!memory) return 1;
    for (long i = 0; i < bytes; i += 4096) memory[i] = 1;
    sleep(seconds);
    return 0;
}
"#;

/// The program `source` (C), compiled statically with the machine's `cc`.
fn static_binary(source: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("main.c");
    let binary = dir.path().join("main");
    std::fs::write(&file, source)?;
    let out = std::process::Command::new("cc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary)
        .arg(&file)
        .output()
        .map_err(|e| anyhow::anyhow!("run cc: {e} (apt-get install -y gcc libc6-dev)"))?;
    if !out.status.success() {
        anyhow::bail!(
            "cc -static failed (apt-get install -y gcc libc6-dev): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(std::fs::read(binary)?)
}

/// Writes an OCI archive holding the pause image as `name`.
pub fn write_pause_archive(path: &Path, name: &str) -> Result<()> {
    pause(&pause_layer()?)?.write_archive(path, name)
}

/// The layer holding `/pause`.
fn pause_layer() -> Result<Vec<u8>> {
    let binary = pause_binary()?;
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    layer.append_data(&mut header, "pause", binary.as_slice())?;
    Ok(layer.into_inner()?)
}

/// The pause image: busybox, and `/pause` (`pause`, the layer) as its entry point.
fn pause(pause: &[u8]) -> Result<Image> {
    let config = serde_json::json!({ "Env": ["PATH=/bin"], "Entrypoint": ["/pause"] });
    Ok(Image::new(vec![busybox_layer()?, pause.to_vec()], config))
}

/// An image as its blobs: what an archive packs and [`crate::registry`] serves. Its layers
/// are uncompressed tars.
pub struct Image {
    /// The manifest (`application/vnd.oci.image.manifest.v1+json`).
    pub manifest: Vec<u8>,
    /// The image config.
    pub config: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<Vec<u8>>,
}

impl Image {
    /// The image of `layers` whose config's `config` part (command, environment, volumes)
    /// is `config`, for this machine's architecture.
    pub fn new(layers: Vec<Vec<u8>>, config: serde_json::Value) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let config = serde_json::json!({
            "architecture": shim_demo::image::oci_arch(),
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
        Image {
            manifest,
            config,
            layers,
        }
    }

    /// Writes an OCI archive of this image, called `name`.
    pub fn write_archive(&self, path: &Path, name: &str) -> Result<()> {
        let arch = shim_demo::image::oci_arch();
        let descriptor = serde_json::json!({
            "mediaType": shim_demo::image::MANIFEST_TYPE,
            "digest": digest(&self.manifest),
            "size": self.manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": { "io.containerd.image.name": name },
        });
        let index =
            serde_json::json!({ "schemaVersion": 2, "manifests": [descriptor] }).to_string();
        let blobs: Vec<&Vec<u8>> = self
            .layers
            .iter()
            .chain([&self.config, &self.manifest])
            .collect();
        pack(path, &index, &blobs)
    }
}

/// The images containerd's own test suites (its CRI suite, `integration/`, and its client
/// suite, `integration/client`) use, under their default names (`integration/images`),
/// made here as stand-ins that do what the tests ask of each:
///
/// - `busybox`: busybox; `alpine`: busybox with alpine's `/etc/os-release`;
/// - `pause`: the pause image (a container that runs until stopped);
/// - `resource-consumer`: the pause image with `/bin/stress` (`STRESS_C`);
/// - `nginx`: busybox printing nginx's "start worker processes", then pausing;
/// - `volume-copy-up`: busybox with three volumes holding a `test_content` file each
///   (`/test_dir`, `/:colon_prefixed`, `/C:/weird_test_dir`);
/// - `volume-ownership`: busybox with the volume `/test_dir` owned by 65534:65534.
///
/// Returns each name with its image. Not made: the busybox pinned by digest (a digest names
/// one upstream manifest) and the Windows and whiteout images.
pub fn suite_images() -> Result<Vec<(&'static str, Image)>> {
    let busybox_layer = busybox_layer()?;
    let pause_layer = pause_layer()?;
    let with = |extra: Vec<Vec<u8>>, config: serde_json::Value| {
        let mut layers = vec![busybox_layer.clone()];
        layers.extend(extra);
        Image::new(layers, config)
    };
    let shell = serde_json::json!({ "Env": ["PATH=/bin"], "Cmd": ["sh"] });
    let pausing = serde_json::json!({ "Env": ["PATH=/bin"], "Entrypoint": ["/pause"] });
    let nginx = serde_json::json!({
        "Env": ["PATH=/bin"],
        "Entrypoint": ["/bin/sh", "-c", "echo 'start worker processes' >&2; exec /pause"],
    });
    let os_release = layer(&[(
        "etc/os-release",
        0,
        b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.14.0\n",
    )])?;
    let stress = layer(&[("bin/stress", 0, &static_binary(STRESS_C)?)])?;
    let copy_up = layer(&[
        ("test_dir/test_file", 0, b"test_content\n"),
        (":colon_prefixed/colon_prefixed_file", 0, b"test_content\n"),
        ("C:/weird_test_dir/weird_test_file", 0, b"test_content\n"),
    ])?;
    let copy_up_config = serde_json::json!({
        "Env": ["PATH=/bin"],
        "Cmd": ["sh"],
        "Volumes": { "/test_dir": {}, "/:colon_prefixed": {}, "/C:/weird_test_dir": {} },
    });
    let ownership = layer(&[("test_dir/", 65534, b"")])?;
    let ownership_config = serde_json::json!({
        "Env": ["PATH=/bin"],
        "Cmd": ["sh"],
        "Volumes": { "/test_dir": {} },
    });
    Ok(vec![
        (
            "ghcr.io/containerd/busybox:1.36",
            with(vec![], shell.clone()),
        ),
        (
            "ghcr.io/containerd/alpine:3.14.0",
            with(vec![os_release], shell),
        ),
        ("registry.k8s.io/pause:3.10.2", pause(&pause_layer)?),
        (
            "registry.k8s.io/e2e-test-images/resource-consumer:1.10",
            with(vec![pause_layer.clone(), stress], pausing),
        ),
        (
            "ghcr.io/containerd/nginx:1.27.0",
            with(vec![pause_layer], nginx),
        ),
        (
            "ghcr.io/containerd/volume-copy-up:2.2",
            with(vec![copy_up], copy_up_config),
        ),
        (
            "ghcr.io/containerd/volume-ownership:2.1",
            with(vec![ownership], ownership_config),
        ),
    ])
}

/// A layer of `(path, owner, contents)`: a directory where the path ends with `/`, else a
/// file (executable under `bin/`); owner is the uid and gid.
fn layer(entries: &[(&str, u64, &[u8])]) -> Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for (path, owner, data) in entries {
        let mut header = tar::Header::new_ustar();
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else if path.starts_with("bin/") {
            header.set_mode(0o755);
        } else {
            header.set_mode(0o644);
        }
        header.set_size(data.len() as u64);
        header.set_uid(*owner);
        header.set_gid(*owner);
        header.set_cksum();
        layer.append_data(&mut header, path, *data)?;
    }
    Ok(layer.into_inner()?)
}
