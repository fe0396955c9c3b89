//! `sample-image <archive.tar>`: writes the tiny, empty OCI image the tests use, for
//! `ctr image import` on a machine with no registry access.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .context("usage: sample-image <archive.tar>")?;
    integration::image::write_oci_archive(path.as_ref(), integration::image::IMAGE)?;
    println!("{}", integration::image::IMAGE);
    Ok(())
}
