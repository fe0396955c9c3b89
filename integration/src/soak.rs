//! The soak: many lifecycles in a row, then a count of everything that could have leaked.
//!
//! Used by the `soak` test (N = 50) and by `cargo run -p integration --bin soak -- N`.

use std::{fs, path::Path, time::Instant};

use anyhow::{ensure, Context, Result};

use crate::{proc, Containerd};

/// What a soak observed.
#[derive(Debug)]
pub struct SoakReport {
    /// Cycles of each kind that ran.
    pub cycles: usize,
    /// Wall time of the create/start/kill/delete cycles and of the `ctr run --rm` ones, s.
    pub lifecycle_seconds: f64,
    /// Wall time of the `ctr run --rm` cycles, s.
    pub run_rm_seconds: f64,
    /// containerd's open descriptors after a warm-up cycle, and at the end.
    pub containerd_fds: (usize, usize),
    /// Zombie children of the harness, shims still running, files left behind.
    pub zombies: usize,
    /// Shim processes left.
    pub shims: usize,
    /// Files left in the shim socket directory that were not there before.
    pub sockets_left: usize,
    /// FIFO files or directories left by the demo or ctr.
    pub fifos_left: usize,
    /// Bundle directories left.
    pub bundles_left: usize,
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn fds(pid: i32) -> usize {
    count(Path::new(&format!("/proc/{pid}/fd")))
}

/// What each of `pid`'s descriptors points at, for a report that names a leak.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let mut targets: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| format!("{}", fs::read_link(e.path()).unwrap_or_default().display()))
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    targets
}

/// Runs `n` create/start/kill/delete cycles through `shim-demo` and `n` `ctr run --rm`
/// cycles, checking every exit code, then counts what is left.
pub fn soak(cd: &Containerd, n: usize) -> Result<SoakReport> {
    let image = cd.import_image();
    let demo = |args: &[&str]| -> Result<std::process::Output> {
        cd.shim_demo().args(args).output().context("run shim-demo")
    };
    let sockets_before = count(Path::new("/run/containerd/s"));
    let cycle = |i: usize| -> Result<()> {
        let id = format!("soak-{i}");
        for args in [
            vec!["create", "--id", &id, "--image", image],
            vec!["start", "--detach", "--id", &id],
        ] {
            let out = demo(&args)?;
            ensure!(out.status.success(), "{args:?}: {out:?}");
        }
        cd.wait_status(&id, "RUNNING");
        ensure!(demo(&["kill", "--id", &id])?.status.success(), "kill {id}");
        cd.wait_status(&id, "STOPPED");
        let out = demo(&["rm", "--id", &id])?;
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && said.contains("143 = 128 + 15"),
            "rm {id}: {said}"
        );
        Ok(())
    };
    let run_rm = |id: &str, code: i32| -> Result<()> {
        let script = format!("exit {code}");
        let out = cd.run_rm(id, &["sh", "-c", &script]);
        ensure!(out.status.code() == Some(code), "ctr run {id}: {out:?}");
        Ok(())
    };
    // Warm-up, one of each: containerd opens its long-lived descriptors (the snapshotter's
    // database, for one) on first use.
    cycle(0)?;
    run_rm("warm-up", 0)?;
    cd.wait_shims_gone();
    let baseline = fds(cd.daemon_pid());
    eprintln!("baseline fds: {:?}", fd_targets(cd.daemon_pid()));

    let started = Instant::now();
    for i in 1..=n {
        cycle(i)?;
    }
    let lifecycle_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for i in 0..n {
        run_rm(&format!("run-{i}"), (i % 100) as i32)?;
    }
    let run_rm_seconds = started.elapsed().as_secs_f64();

    cd.wait_shims_gone();
    // containerd closes a dead shim's connection asynchronously, and opens descriptors of
    // its own for a moment now and then (2.1 does): a leak is a count that never comes
    // back to the baseline within 2 s, so the lowest count seen is the one reported.
    let mut final_fds = fds(cd.daemon_pid());
    for _ in 0..100 {
        if final_fds <= baseline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        final_fds = final_fds.min(fds(cd.daemon_pid()));
    }
    eprintln!("final fds: {:?}", fd_targets(cd.daemon_pid()));
    let me = std::process::id() as i32;
    let zombies = proc::children(me)
        .into_iter()
        .filter(|&p| {
            proc::stat(p).is_some_and(|s| s.0 == 'Z') && proc::comm(p) != "containerd-shim"
        })
        .count();
    let bundles = cd.dir().join(format!(
        "state/io.containerd.runtime.v2.task/{}",
        cd.namespace()
    ));
    Ok(SoakReport {
        cycles: n,
        lifecycle_seconds,
        run_rm_seconds,
        containerd_fds: (baseline, final_fds),
        zombies,
        shims: cd.shim_pids().len(),
        sockets_left: count(Path::new("/run/containerd/s")).saturating_sub(sockets_before),
        // shim-demo's FIFO directories, and ctr's (under the daemon's directory).
        fifos_left: count(&shim_demo::fifo::daemon_dir(&cd.address))
            + count(&cd.dir().join("fifo")),
        bundles_left: count(&bundles),
    })
}
