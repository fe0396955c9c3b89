//! Which of the shim's processes belong to which container.
//!
//! A shim may serve several containers: the containers of one pod share it (see `task/shim.rs`).
//! Host processes have no cgroup or pid namespace to say whose they are, so the shim works it
//! out from what every process inherits from its parent and keeps when orphaned:
//!
//! - every process the shim spawns for a container (its init, its execs) leads a process
//!   group or a session of its own, or joins its init's group (`model/host/mod.rs`); the
//!   container's *leaders* are the pids that lead, kept while their group or session has a
//!   process ([`Registry`]), so a pid the kernel hands out again is not
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
//! All of the above is the fallback of the host model (`model/host/mod.rs`). A container with a
//! cgroup (`cgroup/mod.rs`) has its members listed by the kernel: whatever is in the cgroup,
//! strays included, and nothing else. Its leaders are still registered here, so that a
//! neighbour without a cgroup never takes its processes for strays.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    sync::Mutex,
};

use crate::sys::procfs::{self, ProcStat};

/// Who runs what among the shim's descendants: what each container of the shim claims,
/// and the process groups of the shim's loggers. One per shim, owned by the service and
/// shared by the containers' [`crate::model::host`] processes and by the stdio that starts
/// loggers (`stdio/logs.rs`).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By container id.
    claims: BTreeMap<String, Claimed>,
    /// The process groups of the running loggers, each led by its logger. What runs in
    /// them is nobody's task: never counted as a container's, so a logger (and whatever it
    /// starts) is never killed as a task's leftover, even while it is being stopped after
    /// its process was deleted.
    loggers: Vec<i32>,
}

/// What one container claims.
#[derive(Debug, Default, Clone)]
struct Claimed {
    /// The pids that lead its process groups and sessions: the init's, and those of the
    /// execs with a group or session of their own. A leader stays after its process exits
    /// while a process of its group or session lives, and is then forgotten: only then may
    /// the kernel give its pid to another.
    leaders: Vec<i32>,
    /// Pids of its processes whose exit is not recorded yet.
    live: Vec<i32>,
    /// Whether its init has not exited.
    running: bool,
}

impl Registry {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds consistent lists.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Process `pid` of container `id` was spawned; `leads` when it leads a group or a
    /// session of its own; `init` when it is the container's init.
    pub fn spawned(&self, id: &str, pid: i32, leads: bool, init: bool) {
        let mut inner = self.inner();
        let claim = inner.claims.entry(id.to_string()).or_default();
        claim.live.push(pid);
        if leads {
            claim.leaders.push(pid);
        }
        claim.running |= init;
    }

    /// The exit of process `pid` of container `id` was recorded.
    pub fn exited(&self, id: &str, pid: i32, init: bool) {
        if let Some(claim) = self.inner().claims.get_mut(id) {
            claim.live.retain(|&p| p != pid);
            if init {
                claim.running = false;
            }
        }
    }

    /// Container `id` is gone: it claims nothing any more.
    pub fn forget(&self, id: &str) {
        self.inner().claims.remove(id);
    }

    /// A logger leading process group `pgid` runs.
    pub fn add_logger(&self, pgid: i32) {
        self.inner().loggers.push(pgid);
    }

    /// The logger of group `pgid` is gone.
    pub fn remove_logger(&self, pgid: i32) {
        self.inner().loggers.retain(|&g| g != pgid);
    }

    /// The filter that picks container `id`'s processes out of the shim's descendants,
    /// after forgetting the leaders whose groups and sessions are empty.
    pub fn selection(&self, id: &str) -> Selection {
        let mut inner = self.inner();
        forget_past_leaders(&mut inner);
        let claims: Vec<Claim> = inner
            .claims
            .iter()
            .map(|(id, c)| Claim {
                id,
                leaders: &c.leaders,
                live: c.live.clone(),
                running: c.running,
            })
            .collect();
        let mut selection = Selection::of(&claims, id);
        selection.loggers = inner.loggers.clone();
        selection
    }
}

/// Forgets the leaders whose process exited and whose groups and sessions are empty, so
/// that a pid the kernel hands out again is never taken for theirs. The look is the
/// exhaustive one: a leader forgotten while its group lives would turn the group's
/// processes into strays.
fn forget_past_leaders(inner: &mut Inner) {
    let past = |c: &Claimed| c.leaders.iter().any(|l| !c.live.contains(l));
    if !inner.claims.values().any(past) {
        return;
    }
    let Ok(processes) = procfs::descendants_exhaustive(std::process::id() as i32) else {
        return;
    };
    let in_use: HashSet<i32> = processes
        .iter()
        .filter(|p| p.state != 'Z')
        .flat_map(|p| [p.pgid, p.sid])
        .collect();
    for claim in inner.claims.values_mut() {
        let live = claim.live.clone();
        claim
            .leaders
            .retain(|leader| live.contains(leader) || in_use.contains(leader));
    }
}

/// The processes of one container, as a filter over the shim's descendants.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The container's leaders: pids of its init and exec processes.
    pub mine: Vec<i32>,
    /// The leaders of every other container of the shim.
    pub others: Vec<i32>,
    /// Whether strays count as this container's: no other container's init runs.
    pub strays: bool,
    /// The process groups of the shim's loggers: what runs in them is nobody's.
    pub loggers: Vec<i32>,
}

/// What one container claims: its leaders, which of its processes live, whether its init
/// runs.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The container id.
    pub id: &'a str,
    /// Pids of the processes that lead for it, exited or not.
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

impl Selection {
    /// The processes of container `id`, given what every container of the shim claims.
    ///
    /// A leader that has exited may see its pid reused. Should another container's live
    /// process get it (a new init, leading its own group), the pid leads for that container
    /// from then on, not for the old one: a live claim wins over a stale one.
    pub fn of(claims: &[Claim], id: &str) -> Selection {
        let live_elsewhere =
            |pid: &i32, owner: &str| claims.iter().any(|c| c.id != owner && c.live.contains(pid));
        let mut selection = Selection {
            strays: true,
            ..Default::default()
        };
        for claim in claims {
            let leaders = claim
                .leaders
                .iter()
                .filter(|pid| !live_elsewhere(pid, claim.id));
            if claim.id == id {
                selection.mine.extend(leaders);
            } else {
                selection.others.extend(leaders);
                selection.strays &= !claim.running;
            }
        }
        selection
    }

    /// The container's live processes and zombies among the shim's descendants (the quick
    /// look of `procfs::descendants`, which may miss a process while others exit).
    pub fn quick(&self) -> io::Result<Vec<ProcStat>> {
        Ok(self.select(procfs::descendants(std::process::id() as i32)?))
    }

    /// A look that cannot miss a process that exists throughout it. One system call when
    /// the shim has no child at all: it is a subreaper, so then it has no descendant either
    /// (an orphan would be re-parented to it), and the kernel says whether it has children
    /// without a miss (`sys::has_children`). Otherwise a pass over all of `/proc`: a few
    /// milliseconds.
    pub fn exhaustive(&self) -> io::Result<Vec<ProcStat>> {
        if !crate::sys::has_children() {
            return Ok(Vec::new());
        }
        let shim = std::process::id() as i32;
        Ok(self.select(procfs::descendants_exhaustive(shim)?))
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
        let a = Selection {
            mine: vec![10, 11],
            others: vec![20],
            strays: false,
            loggers: Vec::new(),
        };
        assert_eq!(pids(a.select(pod())), vec![10, 11, 12, 30]);
        let b = Selection {
            mine: vec![20],
            others: vec![10, 11],
            strays: false,
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
        let a = Selection::of(&claims, "a");
        assert_eq!((a.mine, a.others, a.strays), (vec![10], vec![500], false));
        let b = Selection::of(&claims, "b");
        assert_eq!((b.mine, b.others, b.strays), (vec![500], vec![10], false));
    }

    #[test]
    fn strays_go_only_with_a_container_that_has_no_running_neighbour() {
        let last = Selection {
            mine: vec![20],
            others: vec![10, 11],
            strays: true,
            loggers: Vec::new(),
        };
        assert_eq!(pids(last.select(pod())), vec![20, 21, 40]);
        let alone = Selection {
            mine: vec![10],
            others: vec![],
            strays: true,
            loggers: Vec::new(),
        };
        assert_eq!(pids(alone.select(pod())), vec![10, 11, 12, 20, 21, 30, 40]);
    }
}
