//! Waiting for the kernel to say a cgroup ran out of memory.
//!
//! - **cgroup v1**: an eventfd registered for `memory.oom_control` through
//!   `cgroup.event_control` (the kernel's memcg notification API); the kernel signals it
//!   when the cgroup hits its limit and the OOM killer steps in, and when the cgroup goes.
//! - **cgroup v2**: an inotify watch on `memory.events`, which the kernel touches whenever
//!   one of its counters (`oom`, `oom_kill`, ...) moves.
//!
//! Either way the notification only says "look": the service then reads the `oom_kill`
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

    /// A watch that is notified whenever `file` is modified (v2's `memory.events`).
    fn modifications_of(file: &Path) -> io::Result<OomWatch> {
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
