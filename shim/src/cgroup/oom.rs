//! Waiting for the kernel to say a cgroup ran out of memory.
//!
//! - **cgroup v1**: an eventfd registered for `memory.oom_control` through
//!   `cgroup.event_control` (the kernel's memcg notification API); the kernel signals it
//!   when the cgroup hits its limit and the OOM killer steps in, and when the cgroup goes.
//! - **cgroup v2**: an inotify watch on `memory.events`, which the kernel touches whenever
//!   one of its counters (`oom`, `oom_kill`, ...) moves.
//!
//! Either way the notification only says "look": the container then reads the `oom_kill`
//! counter ([`Cgroup::oom_kills`]) and publishes `/tasks/oom` when it went up. It reads it
//! again before publishing an init's exit, so that the OOM event of a task the OOM killer
//! ended always comes before its `/tasks/exit`, whichever the shim hears of first.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use rustix::{
    event::{eventfd, EventfdFlags},
    fs::inotify,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{cgroup::Cgroup, sys};

/// A registration for a cgroup's OOM notifications.
pub struct OomWatch {
    /// The eventfd (v1) or inotify instance (v2) that becomes readable.
    fd: AsyncFd<OwnedFd>,
    /// v1: `memory.oom_control`, kept open while the registration lasts.
    _control: Option<File>,
}

impl OomWatch {
    /// Registers for `cgroup`'s OOM notifications; `None` without a memory controller.
    pub fn new(cgroup: &Cgroup) -> io::Result<Option<OomWatch>> {
        let Some(dir) = cgroup.dir_of("memory") else {
            return Ok(None);
        };
        if cgroup.is_v2() {
            let events = dir.join("memory.events");
            if !events.exists() {
                return Ok(None);
            }
            return OomWatch::modifications_of(&events).map(Some);
        }
        let control = File::open(dir.join("memory.oom_control"))?;
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        // "<eventfd> <file to watch>": the kernel resolves both numbers in the writer's
        // descriptor table, at the moment of this write.
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(Some(OomWatch {
            fd: sys::on_reactor(fd)?,
            _control: Some(control),
        }))
    }

    /// A watch that is notified whenever `file` is modified: v2's `memory.events` here,
    /// and `cgroup.events` for the freezer (`model/host/mod.rs`), which the kernel touches too.
    pub fn modifications_of(file: &Path) -> io::Result<OomWatch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, file, inotify::WatchFlags::MODIFY)?;
        Ok(OomWatch {
            fd: sys::on_reactor(fd)?,
            _control: None,
        })
    }

    /// Waits for the next notification (and consumes it: an eventfd's counter, or the
    /// inotify events queued so far).
    pub async fn notified(&mut self) -> io::Result<()> {
        let mut buffer = [0u8; 4096];
        let read = self.fd.async_io(Interest::READABLE, |fd| {
            Ok(rustix::io::read(fd, &mut buffer)?)
        });
        match read.await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use tokio::time::timeout;

    use super::*;
    use crate::cgroup::{tests::may_write_cgroups, Hierarchy};

    /// Whether `watch` is notified within `limit`.
    async fn notified_within(watch: &mut OomWatch, limit: Duration) -> bool {
        match timeout(limit, watch.notified()).await {
            Ok(result) => {
                result.expect("read the notification");
                true
            }
            Err(_) => false,
        }
    }

    /// The v2 mechanism on a plain file: silent until the file is written, then one
    /// notification for the writes so far.
    #[tokio::test]
    async fn an_inotify_watch_wakes_when_its_file_is_modified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("memory.events");
        std::fs::write(&file, "oom 0\n").expect("write");
        let mut watch = OomWatch::modifications_of(&file).expect("watch");
        assert!(!notified_within(&mut watch, Duration::from_millis(50)).await);
        std::fs::write(&file, "oom 1\n").expect("write");
        assert!(notified_within(&mut watch, Duration::from_secs(5)).await);
    }

    /// A real cgroup of this machine's hierarchy (v1 here: an eventfd through
    /// `cgroup.event_control`), as root: nothing while the cgroup is idle, a notification
    /// when it is removed (the kernel signals v1's eventfd when the cgroup goes; v2's
    /// inotify watch reports its file's removal).
    #[tokio::test]
    async fn a_real_cgroup_s_watch_is_notified_when_the_cgroup_goes() {
        if !may_write_cgroups() {
            return;
        }
        let cgroup = Cgroup {
            hierarchy: Hierarchy::detect().expect("a cgroup hierarchy is mounted"),
            path: PathBuf::from(format!("/shim-sample-test-oom/{}", std::process::id())),
        };
        cgroup.create().expect("create");
        let parent = Cgroup {
            path: PathBuf::from("/shim-sample-test-oom"),
            ..cgroup.clone()
        };
        let mut watch = OomWatch::new(&cgroup);
        let quiet = match &mut watch {
            Ok(Some(w)) => !notified_within(w, Duration::from_millis(50)).await,
            _ => false,
        };
        let removed = cgroup.remove();
        let notified = match &mut watch {
            Ok(Some(w)) => notified_within(w, Duration::from_secs(5)).await,
            _ => false,
        };
        // Only if empty: another test process may have its own cgroup there.
        for dir in parent.dirs() {
            let _ = std::fs::remove_dir(dir);
        }
        let watch = watch.expect("register for OOM notifications");
        assert!(
            watch.is_some(),
            "no memory controller in {:?}",
            cgroup.hierarchy
        );
        assert!(quiet, "notified while the cgroup was idle");
        removed.expect("remove the cgroup");
        assert!(
            notified,
            "no notification within 5 s of the cgroup's removal"
        );
    }
}
