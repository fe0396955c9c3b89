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
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use crate::cgroup::Cgroup;

/// A registration for a cgroup's OOM notifications.
pub struct OomWatch {
    /// The eventfd (v1) or inotify instance (v2) that becomes readable.
    fd: AsyncFd<OwnedFd>,
    /// v1: `memory.oom_control`, kept open while the registration lasts.
    _control: Option<File>,
}

/// `fd` from a libc call that returns -1 on failure.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fd` on the runtime's reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` keeps its descriptor open, and the same, for as long as the
    // `AsyncFd` holds it.
    Ok(unsafe { AsyncFd::register(fd) }?)
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
            // SAFETY: plain system calls; the descriptor is owned at once.
            let fd = owned(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
            let path = std::ffi::CString::new(events.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            // SAFETY: `fd` is an inotify instance, `path` a C string.
            let watch =
                unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
            if watch < 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(Some(OomWatch {
                fd: register(fd)?,
                _control: None,
            }));
        }
        let control = File::open(dir.join("memory.oom_control"))?;
        // SAFETY: a plain system call; the descriptor is owned at once.
        let fd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", fd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(Some(OomWatch {
            fd: register(fd)?,
            _control: Some(control),
        }))
    }

    /// Waits for the next notification (and consumes it).
    pub async fn notified(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut buffer = [0u8; 4096];
            // SAFETY: reads into a buffer of the size given.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if n > 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if n < 0 && err.kind() == io::ErrorKind::WouldBlock {
                ready.clear_ready();
                continue;
            }
            return Err(if n == 0 {
                io::Error::from(io::ErrorKind::UnexpectedEof)
            } else {
                err
            });
        }
    }
}
