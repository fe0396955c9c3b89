//! `sample-image [--busybox | --pause] <archive.tar>`: writes an OCI image archive for
//! `ctr image import` on a machine with no registry access, and prints the image's name:
//! the tiny, empty image the tests use (the default), busybox (the OCI mode's containers),
//! or the pause image (a pod's sandbox in the OCI mode; needs `cc` and static libc).

use anyhow::{Context, Result};
use integration::image;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sample-image [--busybox | --pause] <archive.tar>";
    let (kind, path) = match args.as_slice() {
        [path] => ("", path),
        [kind, path] => (kind.as_str(), path),
        _ => anyhow::bail!("{usage}"),
    };
    let path = std::path::Path::new(path);
    let name = match kind {
        "" => {
            image::write_oci_archive(path, image::IMAGE)?;
            image::IMAGE
        }
        "--busybox" => {
            image::write_busybox_archive(path, image::BUSYBOX)?;
            image::BUSYBOX
        }
        "--pause" => {
            image::write_pause_archive(path, image::PAUSE)?;
            image::PAUSE
        }
        other => return Err(anyhow::anyhow!("unknown option {other}")).context(usage),
    };
    println!("{name}");
    Ok(())
}
