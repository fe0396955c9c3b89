//! A container (a *task*, in containerd's API) as the shim knows it: its init process, its
//! exec processes, and the ids that name them.
//!
//! The init process is the one `Create` made from the bundle's spec; its exec id is empty in
//! requests, and it is reported under the container's own id in events. Exec processes
//! (`ctr task exec --exec-id ID`) are added by `Exec`, each with an id of its own, and live
//! until their own `Delete`. The service (`service.rs`) keeps containers in a table by id:
//! one per shim, or all the containers of a pod.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use crate::{
    cgroup::Cgroup,
    error::{Error, Result},
    members::{Claim, ContainerProcesses},
    process::{Group, Process},
};

/// Longest id accepted for a task, an exec process or a namespace (containerd's limit is 76).
pub const MAX_ID_LEN: usize = 76;

/// Checks a task, exec or namespace id: it names files and log lines, so no path tricks.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let bad = id.is_empty()
        || id.len() > MAX_ID_LEN
        || id == "."
        || id.contains("..")
        || id.chars().any(|c| c == '/' || c == '\0' || c.is_control());
    if bad {
        return Err(Error::InvalidArgument(format!(
            "invalid {kind} id {id:?}: 1 to {MAX_ID_LEN} characters, no '/', '..' or control characters"
        )));
    }
    Ok(())
}

/// Which process of a container a pid belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// The init process.
    Init,
    /// The exec process with this exec id.
    Exec(String),
}

/// A container and its processes.
pub struct Container {
    /// The container id.
    pub id: String,
    /// The bundle directory containerd made for it.
    pub bundle: PathBuf,
    /// Its init process.
    pub init: Process,
    /// Exec processes by exec id, from `Exec` until their `Delete`.
    pub execs: HashMap<String, Process>,
    /// Between `Pause` and `Resume`: every process of the task is frozen (its cgroup's
    /// freezer) or stopped (SIGSTOP).
    pub paused: bool,
    /// Its cgroup, when its spec names one and the machine lets the shim write cgroups.
    pub cgroup: Option<Cgroup>,
    /// The cgroup's OOM kills already published as `/tasks/oom`.
    pub oom_kills: u64,
    /// The task waiting for the cgroup's OOM notifications (`oom.rs`), stopped at `Delete`.
    pub oom_watch: Option<tokio::task::AbortHandle>,
    /// The pids that lead its process groups and sessions (`members.rs`): the init's, and
    /// those of the execs with a group or session of their own. A leader stays after its
    /// process exits while a process of its group or session lives, and is then forgotten
    /// ([`Container::forget_leaders`]): only then may the kernel give its pid to another.
    pub leaders: Vec<i32>,
}

impl Container {
    /// A container whose init process was just created.
    pub fn new(id: String, bundle: PathBuf, init: Process, cgroup: Option<Cgroup>) -> Container {
        Container {
            cgroup,
            id,
            bundle,
            leaders: vec![init.pid],
            init,
            execs: HashMap::new(),
            paused: false,
            oom_kills: 0,
            oom_watch: None,
        }
    }

    /// Adds an exec process, which `leads` a group or session of its own or joined the
    /// init's group.
    pub fn add_exec(&mut self, exec_id: String, exec: Process, leads: bool) {
        if leads {
            self.leaders.push(exec.pid);
        }
        self.execs.insert(exec_id, exec);
    }

    /// True when a leader's process has exited.
    pub fn has_past_leaders(&self) -> bool {
        self.leaders
            .iter()
            .any(|l| !self.live_pids().any(|p| p == *l))
    }

    /// Forgets the leaders whose process has exited and whose group and session have no
    /// process left: `in_use` holds every group and session id of the shim's descendants.
    pub fn forget_leaders(&mut self, in_use: &HashSet<i32>) {
        let live: Vec<i32> = self.live_pids().collect();
        self.leaders
            .retain(|leader| live.contains(leader) || in_use.contains(leader));
    }

    /// Its init, then its exec processes.
    fn processes(&self) -> impl Iterator<Item = &Process> {
        std::iter::once(&self.init).chain(self.execs.values())
    }

    /// The pids of its processes whose exit is not recorded yet.
    pub fn live_pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.processes().filter(|p| !p.is_stopped()).map(|p| p.pid)
    }

    /// True while its init process has not been reported exited.
    pub fn is_running(&self) -> bool {
        !self.init.is_stopped()
    }

    /// The init process (empty exec id) or an exec process.
    pub fn process(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs.get_mut(exec_id).ok_or_else(|| {
            Error::NotFound(format!(
                "exec process {exec_id:?} not found in task {:?}",
                self.id
            ))
        })
    }

    /// The process group a new exec process joins: the init's, unless the init has a
    /// terminal. Then it leads a session of its own, and the kernel lets no process of
    /// another session join its group (`setpgid` fails with `EPERM`), so the exec gets a
    /// group of its own, which it leads for the container (`members.rs`): `kill --all`
    /// still reaches it.
    pub fn exec_group(&self) -> Group {
        if self.init.stdio.terminal {
            Group::Own
        } else {
            Group::Join(self.init.pid)
        }
    }

    /// Which of this container's processes `pid` is, if it is one whose exit has not been
    /// recorded yet.
    pub fn live_member(&self, pid: i32) -> Option<Member> {
        if self.init.pid == pid && !self.init.is_stopped() {
            return Some(Member::Init);
        }
        self.execs
            .iter()
            .find(|(_, exec)| exec.pid == pid && !exec.is_stopped())
            .map(|(exec_id, _)| Member::Exec(exec_id.clone()))
    }

    /// True when `pid` is one of its processes that has exited but whose exit is not
    /// recorded yet (its pidfd says so).
    pub fn exit_pending(&self, pid: i32) -> bool {
        self.processes().any(|p| p.pid == pid && p.exit_pending())
    }

    /// True while an exec process has not been reported exited.
    pub fn has_live_execs(&self) -> bool {
        self.execs.values().any(|exec| !exec.is_stopped())
    }

    /// The process a [`Member`] names, and the id containerd reports its exit under.
    pub fn member(&mut self, member: &Member) -> Option<(&mut Process, String)> {
        match member {
            Member::Init => Some((&mut self.init, self.id.clone())),
            Member::Exec(exec_id) => self
                .execs
                .get_mut(exec_id)
                .map(|exec| (exec, exec_id.clone())),
        }
    }
}

/// The processes of container `id` among those of every container of the shim, `all`: its
/// cgroup's when it has one, else as [`ContainerProcesses::of`] works them out.
pub fn processes_of<'a>(
    all: impl IntoIterator<Item = &'a Container>,
    id: &str,
) -> ContainerProcesses {
    let mut cgroup = None;
    let claims: Vec<Claim> = all
        .into_iter()
        .inspect(|c| {
            if c.id == id {
                cgroup = c.cgroup.clone();
            }
        })
        .map(|c| Claim {
            id: &c.id,
            leaders: &c.leaders,
            live: c.live_pids().collect(),
            running: c.is_running(),
        })
        .collect();
    let mut processes = ContainerProcesses::of(&claims, id);
    processes.cgroup = cgroup;
    processes.loggers = crate::logs::logger_groups();
    processes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_path_tricks_or_too_long_are_refused() {
        for good in ["shim-test", "exec-1", "a.b_c", &"x".repeat(MAX_ID_LEN)] {
            assert!(validate_id("exec", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\0b",
            "a\nb",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(
                matches!(validate_id("exec", bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
