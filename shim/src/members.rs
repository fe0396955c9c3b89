//! Which of the shim's processes belong to which container.
//!
//! A shim may serve several containers: the containers of one pod share it (see `shim.rs`).
//! Host processes have no cgroup or pid namespace to say whose they are, so the shim works it
//! out from what every process inherits from its parent and keeps when orphaned:
//!
//! - every process the shim spawns for a container (its init, its execs) leads a process
//!   group or a session of its own, or joins its init's group (`process.rs`); the
//!   container's *leaders* are the pids that lead, kept while their group or session has a
//!   process (`Container::forget_leaders`), so a pid the kernel hands out again is not
//!   taken for theirs;
//! - a process belongs to the container that leads its process group or its session. That
//!   holds for everything the container's processes fork, even once re-parented to the shim
//!   (the child subreaper);
//! - a process that left both (a daemon that called `setsid`) belongs to the container of
//!   its nearest ancestor that did not, while it has one;
//! - an orphan that left both belongs to no container. Such *strays* count as part of a
//!   container only while no other container's init runs: they go at the latest with the
//!   last container of the shim, and never with a neighbour's.
//!
//! With one container per shim this is exactly "every descendant of the shim", as before.
//!
//! All of the above is the fallback. A container with a cgroup (`cgroup.rs`) has its
//! members listed by the kernel: whatever is in the cgroup, strays included, and nothing
//! else.

use std::{collections::HashMap, io};

use crate::{
    cgroup::Cgroup,
    exits::ProcessTree,
    procfs::{self, ProcStat},
    sys,
};

/// The processes of one container, as a filter over the shim's descendants.
#[derive(Debug, Clone, Default)]
pub struct ContainerProcesses {
    /// The container's leaders: pids of its init and exec processes.
    pub mine: Vec<i32>,
    /// The leaders of every other container of the shim.
    pub others: Vec<i32>,
    /// Whether strays count as this container's: no other container's init runs.
    pub strays: bool,
    /// The container's cgroup: when set, its members are the cgroup's processes, and the
    /// rest of this struct is not used.
    pub cgroup: Option<Cgroup>,
    /// The process groups of the shim's loggers (`logs.rs`): what runs in them is nobody's,
    /// never killed with a task (a logger is stopped after its process's output ended).
    pub loggers: Vec<i32>,
}

/// What one container claims: its leaders, which of its processes live, whether its init
/// runs.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The container id.
    pub id: &'a str,
    /// Pids of every process spawned for it, exited or not (`Container::leaders`).
    pub leaders: &'a [i32],
    /// Pids of its processes whose exit is not recorded yet.
    pub live: Vec<i32>,
    /// Whether its init has not exited.
    pub running: bool,
}

/// Whose a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Mine,
    Other,
    Stray,
}

impl ContainerProcesses {
    /// The processes of container `id`, given what every container of the shim claims.
    ///
    /// A leader that has exited may see its pid reused. Should another container's live
    /// process get it (a new init, leading its own group), the pid leads for that container
    /// from then on, not for the old one: a live claim wins over a stale one.
    pub fn of(claims: &[Claim], id: &str) -> ContainerProcesses {
        let live_elsewhere =
            |pid: &i32, owner: &str| claims.iter().any(|c| c.id != owner && c.live.contains(pid));
        let mut processes = ContainerProcesses {
            strays: true,
            ..Default::default()
        };
        for claim in claims {
            let leaders = claim
                .leaders
                .iter()
                .filter(|pid| !live_elsewhere(pid, claim.id));
            if claim.id == id {
                processes.mine.extend(leaders);
            } else {
                processes.others.extend(leaders);
                processes.strays &= !claim.running;
            }
        }
        processes
    }

    /// The container's live processes and zombies among the shim's descendants (the quick
    /// look of `procfs::descendants`); with a cgroup, its live processes (the kernel takes a
    /// process out of its cgroup as it exits).
    pub fn list(&self) -> io::Result<Vec<ProcStat>> {
        if let Some(cgroup) = &self.cgroup {
            // A process that exits between the two reads is not listed.
            return Ok(cgroup
                .procs()?
                .into_iter()
                .filter_map(|pid| ProcStat::read(pid).ok())
                .collect());
        }
        Ok(self.select(procfs::descendants(std::process::id() as i32)?))
    }

    /// Keeps the container's processes out of `descendants` (the shim's, any order).
    pub fn select(&self, descendants: Vec<ProcStat>) -> Vec<ProcStat> {
        let by_pid: HashMap<i32, &ProcStat> = descendants.iter().map(|p| (p.pid, p)).collect();
        let keep: Vec<bool> = descendants
            .iter()
            .map(|p| match self.owner(p, &by_pid) {
                Owner::Mine => true,
                Owner::Other => false,
                Owner::Stray => self.strays,
            })
            .collect();
        descendants
            .into_iter()
            .zip(keep)
            .filter_map(|(p, keep)| keep.then_some(p))
            .collect()
    }

    /// Walks from `process` up through its ancestors until one is in a container's group or
    /// session.
    fn owner(&self, process: &ProcStat, by_pid: &HashMap<i32, &ProcStat>) -> Owner {
        let mut current = process;
        // Bounded: a parent link can only be followed as many times as there are processes.
        for _ in 0..=by_pid.len() {
            if self.loggers.contains(&current.pgid) {
                return Owner::Other;
            }
            let led_by =
                |leaders: &[i32]| leaders.contains(&current.pgid) || leaders.contains(&current.sid);
            if led_by(&self.mine) {
                return Owner::Mine;
            }
            if led_by(&self.others) {
                return Owner::Other;
            }
            match by_pid.get(&current.ppid) {
                Some(parent) => current = parent,
                None => return Owner::Stray,
            }
        }
        Owner::Stray
    }
}

impl ProcessTree for ContainerProcesses {
    fn quick(&self) -> io::Result<Vec<ProcStat>> {
        self.list()
    }

    /// One system call when the shim serves one container and nothing of it is left: the
    /// shim is a subreaper, so while it has no child at all it has no descendant either (an
    /// orphan would be re-parented to it), and the kernel says whether it has children
    /// without a miss (`sys::has_children`). Otherwise (in a pod the other containers'
    /// processes are children too) a pass over all of `/proc`: a few milliseconds.
    fn exhaustive(&self) -> io::Result<Vec<ProcStat>> {
        if self.cgroup.is_some() {
            // `cgroup.procs` misses nothing.
            return self.list();
        }
        if !sys::has_children() {
            return Ok(Vec::new());
        }
        let shim = std::process::id() as i32;
        Ok(self.select(procfs::descendants_exhaustive(shim)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process with its parent, group and session.
    fn proc(pid: i32, ppid: i32, pgid: i32, sid: i32) -> ProcStat {
        ProcStat {
            pid,
            comm: format!("p{pid}"),
            state: 'S',
            ppid,
            pgid,
            sid,
            user_ticks: 0,
            kernel_ticks: 0,
            start_time: 1,
            rss_pages: 0,
        }
    }

    fn pids(found: Vec<ProcStat>) -> Vec<i32> {
        let mut pids: Vec<i32> = found.iter().map(|p| p.pid).collect();
        pids.sort();
        pids
    }

    /// The shim (pid 1, session 1) with two containers: A's init 10 (its own group in the
    /// shim's session) with an exec 11 in its group and an orphan 12 of that exec; B's init
    /// 20 leads a session (a terminal) and forked 21 in a job-control group of its own;
    /// 30 is a daemon of A's that left A's session but whose parent, 10, lives; 40 is an
    /// orphan that left every group and session (a stray).
    fn pod() -> Vec<ProcStat> {
        vec![
            proc(10, 1, 10, 1),
            proc(11, 1, 10, 1),
            proc(12, 1, 10, 1),
            proc(20, 1, 20, 20),
            proc(21, 20, 21, 20),
            proc(30, 10, 30, 30),
            proc(40, 1, 40, 40),
        ]
    }

    #[test]
    fn a_process_belongs_to_the_container_leading_its_group_session_or_ancestor() {
        let a = ContainerProcesses {
            mine: vec![10, 11],
            others: vec![20],
            strays: false,
            cgroup: None,
            loggers: Vec::new(),
        };
        assert_eq!(pids(a.select(pod())), vec![10, 11, 12, 30]);
        let b = ContainerProcesses {
            mine: vec![20],
            others: vec![10, 11],
            strays: false,
            cgroup: None,
            loggers: Vec::new(),
        };
        assert_eq!(pids(b.select(pod())), vec![20, 21]);
    }

    #[test]
    fn a_leader_pid_reused_by_another_container_s_live_process_leads_for_that_one() {
        // A's exec 500 exited long ago; B's new init got pid 500 and leads group 500.
        let claims = [
            Claim {
                id: "a",
                leaders: &[10, 500],
                live: vec![10],
                running: true,
            },
            Claim {
                id: "b",
                leaders: &[500],
                live: vec![500],
                running: true,
            },
        ];
        let a = ContainerProcesses::of(&claims, "a");
        assert_eq!((a.mine, a.others, a.strays), (vec![10], vec![500], false));
        let b = ContainerProcesses::of(&claims, "b");
        assert_eq!((b.mine, b.others, b.strays), (vec![500], vec![10], false));
    }

    #[test]
    fn strays_go_only_with_a_container_that_has_no_running_neighbour() {
        let last = ContainerProcesses {
            mine: vec![20],
            others: vec![10, 11],
            strays: true,
            cgroup: None,
            loggers: Vec::new(),
        };
        assert_eq!(pids(last.select(pod())), vec![20, 21, 40]);
        let alone = ContainerProcesses {
            mine: vec![10],
            others: vec![],
            strays: true,
            cgroup: None,
            loggers: Vec::new(),
        };
        assert_eq!(pids(alone.select(pod())), vec![10, 11, 12, 20, 21, 30, 40]);
    }
}
