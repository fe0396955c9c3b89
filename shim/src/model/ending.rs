//! The end of a container's leftovers, for every model: what still runs of it once its init
//! has exited (or at `Delete`), found and killed through a [`ProcessTree`] (its cgroup, or
//! what the host model knows without one), and waited for on pidfds.

use std::io;

use log::{debug, warn};

use crate::{
    cgroup::Cgroup,
    sys::{self, procfs::ProcStat, Signal},
    task::exits::LEFTOVER_DEADLINE,
};

/// Where a process list comes from: a quick look and one that misses nothing.
pub trait ProcessTree {
    /// A quick look, which may miss a process (see `procfs::descendants`).
    fn quick(&self) -> io::Result<Vec<ProcStat>>;
    /// A look that cannot miss a process that exists throughout it.
    fn exhaustive(&self) -> io::Result<Vec<ProcStat>>;
    /// SIGKILL to every process at once, where the kernel can (v2's `cgroup.kill`, which
    /// a process forking in a loop cannot outrun); [`end_all`] still kills one by one.
    fn kill_at_once(&self) {}
}

impl ProcessTree for Cgroup {
    /// The live processes of the cgroup itself (the kernel takes a process out of its
    /// cgroup as it exits).
    fn quick(&self) -> io::Result<Vec<ProcStat>> {
        // A process that exits between the two reads is not listed.
        Ok(self
            .procs()?
            .into_iter()
            .filter_map(|pid| ProcStat::read(pid).ok())
            .collect())
    }

    /// Those of the cgroups below it too (a nested runtime, systemd in a container).
    fn exhaustive(&self) -> io::Result<Vec<ProcStat>> {
        Ok(self
            .all_procs()
            .into_iter()
            .filter_map(|pid| ProcStat::read(pid).ok())
            .collect())
    }

    fn kill_at_once(&self) {
        // Linux 5.14 and later, v2 only; elsewhere the file is missing and this does nothing.
        if let Some(dir) = self.dir_of("cgroup").filter(|_| self.is_v2()) {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
    }
}

/// Kills every live process in `tree` and waits until each has exited, for at most
/// [`LEFTOVER_DEADLINE`]. Returns how many it found alive on its last look (0 once the
/// tree is empty).
///
/// Quick looks find and kill; the tree counts as empty only when an exhaustive look agrees,
/// since a quick look can miss a child exactly while others are exiting. Each process is
/// signalled through a pidfd opened right after the look, without an `.await` in between
/// (the reaper, on this same thread, cannot free a pid meanwhile), and waited for on that
/// pidfd, which polls readable the moment the process exits: no sleep loop.
pub async fn end_all(tree: &impl ProcessTree) -> usize {
    let deadline = tokio::time::Instant::now() + LEFTOVER_DEADLINE;
    loop {
        let mut left = tree.quick().map(live);
        if left.as_ref().is_ok_and(Vec::is_empty) {
            left = tree.exhaustive().map(live);
        }
        let left = match left {
            Ok(left) if left.is_empty() => return 0,
            Ok(left) => left,
            Err(err) => {
                warn!("cannot list the task's remaining processes: {err}");
                return 0;
            }
        };
        tree.kill_at_once();
        let mut pidfds = Vec::with_capacity(left.len());
        for process in &left {
            debug!(
                "killing leftover process {} ({})",
                process.pid, process.comm
            );
            match sys::pidfd_open(process.pid) {
                Ok(pidfd) => {
                    let _ = sys::signal_pidfd(&pidfd, Signal::KILL);
                    pidfds.push(pidfd);
                }
                // Gone since the look.
                Err(_) => continue,
            }
        }
        for pidfd in pidfds {
            if tokio::time::timeout_at(deadline, sys::exited(pidfd))
                .await
                .is_err()
            {
                warn!("{} processes of the task survived SIGKILL", left.len());
                return left.len();
            }
        }
    }
}

/// The processes of `all` that have not exited (zombies have: the reaper collects them).
fn live(all: Vec<ProcStat>) -> Vec<ProcStat> {
    all.into_iter().filter(|p| p.state != 'Z').collect()
}
