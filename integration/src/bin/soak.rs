//! `soak [N]`: N create/start/kill/delete cycles and N `ctr run --rm` against a private
//! containerd, then what was left behind. As root, after `cargo build --workspace`.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(Ok(50), |a| a.parse())
        .context("usage: soak [N]")?;
    let cd = integration::Containerd::start().context("no containerd")?;
    let report = integration::soak::soak(&cd, n)?;
    println!("{report:#?}");
    Ok(())
}
