//! The birth of a host process: `clone3` straight into its cgroup, the spec's setup, and
//! the `exec` of the start-gate helper.
//!
//! Moving a process into a cgroup (a write of its pid into `cgroup.procs`) takes the
//! kernel's `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period:
//! about 10 ms on an idle machine, the bulk of a task's start. A process *born* in its
//! cgroup pays nothing: `clone3(CLONE_INTO_CGROUP)` (Linux 5.7) takes a cgroup v2
//! directory and makes the child there. So:
//!
//! - **cgroup v2**: the child is born in the task's cgroup; nothing moves.
//! - **cgroup v1** (one hierarchy per controller, none of which `clone3` knows): the child
//!   moves itself, writing `0` into each hierarchy's `cgroup.procs` (opened by the shim
//!   before the clone), *after* it reported its setup done. `Create` returns as soon as
//!   that report arrives; the move goes on meanwhile, while containerd and the client go
//!   on to `Start`, which waits ([`Report::done`]) only for what is left. The helper
//!   `exec`s only once it is in every hierarchy, so the program never runs outside.
//!   On a hybrid machine the child is born in the cgroup2 part (`CLONE_INTO_CGROUP`) and
//!   moves itself into the v1 hierarchies.
//!
//! The child reports through a close-on-exec pipe, in records of 5 bytes (a stage and
//! an `errno`): "ready" once set up, or the stage that failed. End-of-file after
//! "ready" means the `exec` succeeded.
//!
//! Why not `std::process::Command`: it cannot clone into a cgroup, and waits for the
//! `exec` before returning. The child side here obeys the same rule as `sys::child`: only
//! async-signal-safe system calls on data prepared before the clone, no allocation.

use std::{
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::fcntl::OFlag;

use crate::sys;

/// What the child reports, the first byte of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    /// Set up: stdio, process group, directory, the spec's limits and identity.
    Ready = 0,
    /// The setup failed.
    Setup = 1,
    /// A move into a v1 hierarchy failed.
    Join = 2,
    /// The `exec` of the helper failed.
    Exec = 3,
}

impl Stage {
    fn from_byte(byte: u8) -> Option<Stage> {
        [Stage::Ready, Stage::Setup, Stage::Join, Stage::Exec]
            .into_iter()
            .find(|s| *s as u8 == byte)
    }

    fn what(self) -> &'static str {
        match self {
            Stage::Ready => "ready",
            Stage::Setup => "set up the process",
            Stage::Join => "join the task's cgroup",
            Stage::Exec => "exec the start-gate helper",
        }
    }
}

/// One record on the status pipe.
const RECORD: usize = 5;

/// A process to bring into the world: everything prepared, so that the child only makes
/// system calls.
pub struct Birth {
    /// The program to `exec`.
    program: CString,
    /// `argv` as `execve` takes it (NULL-terminated), pointing into `_strings`.
    argv_ptrs: Vec<*const libc::c_char>,
    /// `envp`, likewise.
    envp_ptrs: Vec<*const libc::c_char>,
    /// The strings of `argv` and `envp`, owned here while the pointers are in use.
    _strings: [Vec<CString>; 2],
    /// The working directory.
    cwd: CString,
    /// stdin, stdout, stderr.
    stdio: [OwnedFd; 3],
    /// The process group to join (0: a group of its own), or none (a terminal's session
    /// leader makes its own).
    group: Option<i32>,
    /// The cgroup v2 directory to be born in.
    into: Option<OwnedFd>,
    /// The v1 `cgroup.procs` files to move into.
    join: Vec<OwnedFd>,
}

/// A string for `execve`: no NUL inside.
fn c_string(what: &str, bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

impl Birth {
    /// A process running `program` with `argv` (its `argv[0]` included), environment `env`,
    /// in directory `cwd`, with `stdio` (`None`: `/dev/null`).
    pub fn new<'a>(
        program: &Path,
        argv: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &Path,
        stdio: [Option<OwnedFd>; 3],
    ) -> io::Result<Birth> {
        let argv = argv
            .into_iter()
            .map(|a| c_string("an argument", a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| c_string("an environment variable", format!("{k}={v}").as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let null = || -> io::Result<OwnedFd> {
            Ok(nix::fcntl::open(
                c"/dev/null",
                OFlag::O_RDWR | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?)
        };
        let [stdin, stdout, stderr] = stdio;
        let stdio = [
            stdin.map_or_else(null, Ok)?,
            stdout.map_or_else(null, Ok)?,
            stderr.map_or_else(null, Ok)?,
        ];
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Ok(Birth {
            program: c_string("the program path", program.as_os_str().as_bytes())?,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _strings: [argv, envp],
            cwd: c_string("the working directory", cwd.as_os_str().as_bytes())?,
            stdio,
            group: None,
            into: None,
            join: Vec::new(),
        })
    }

    /// Puts the process into process group `pgid` (0: a group of its own).
    pub fn process_group(&mut self, pgid: i32) {
        self.group = Some(pgid);
    }

    /// Has the process born in cgroup v2 directory `dir`, and moved into the cgroups of
    /// `procs_files` (v1 `cgroup.procs` files) before its `exec`.
    pub fn cgroup(
        &mut self,
        dir: Option<&Path>,
        procs_files: &[std::path::PathBuf],
    ) -> io::Result<()> {
        let open = |path: &Path, flags: OFlag| -> io::Result<OwnedFd> {
            nix::fcntl::open(
                path,
                flags | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("{}: {e}", path.display()),
                )
            })
        };
        if let Some(dir) = dir {
            self.into = Some(open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?);
        }
        for file in procs_files {
            self.join.push(above_9(open(file, OFlag::O_WRONLY)?)?);
        }
        Ok(())
    }

    /// Clones the child, which runs `setup` (async-signal-safe system calls only), reports
    /// and `exec`s. Returns at once, without waiting for the child: its pid, its pidfd, and
    /// its report, to `.await` ([`Report::ready`], then [`Report::done`]). A child may take
    /// any time to set up (a `chdir` into a hung mount, a cgroup frozen from outside that
    /// the kernel stops it in before its first instruction): the caller waits for it on
    /// the runtime, under a deadline, and nothing else waits.
    ///
    /// # Safety
    ///
    /// `setup` runs in the child, a copy of this multi-threaded process where only
    /// async-signal-safe calls are allowed: it must not allocate, lock or panic.
    pub unsafe fn spawn(mut self, setup: &dyn Fn() -> io::Result<()>) -> io::Result<Born> {
        let (status_read, status_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Clear of the descriptors the child places (0 to 3), which would overwrite it.
        let status_write = above_9(status_write)?;
        let unsupported = [libc::E2BIG, libc::EINVAL, libc::ENOSYS];
        let (pid, pidfd) = match self.clone(&status_write, setup) {
            Err(err)
                if self.into.is_some()
                    && err.raw_os_error().is_some_and(|e| unsupported.contains(&e)) =>
            {
                // A kernel before 5.7 (E2BIG, EINVAL) or no clone3 at all (a seccomp
                // filter's ENOSYS): cloned as before, then moved in by the shim, which
                // opened the file as root (the kernel checks the opener since 5.16, the
                // writer before: the child may have dropped root by then).
                log::debug!("clone3 into the cgroup: {err}; moving the process in");
                let dir = self.into.take().expect("checked");
                let procs = nix::fcntl::openat(
                    &dir,
                    "cgroup.procs",
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?;
                let (pid, pidfd) = self.clone(&status_write, setup)?;
                // No `.await` since the clone: the pid is still the child's.
                if let Err(err) = nix::unistd::write(&procs, pid.to_string().as_bytes()) {
                    let _ = sys::signal_pidfd(&pidfd, sys::Signal::KILL);
                    return Err(failed(Stage::Join, err as i32));
                }
                (pid, pidfd)
            }
            result => result?,
        };
        drop(status_write);
        // Our copies of the child's ends go now: the output copies see end-of-file only
        // once every writer is closed.
        drop(self);
        Ok(Born {
            pid,
            pidfd,
            report: Report {
                fd: status_read,
                record: [0; RECORD],
                got: 0,
            },
        })
    }

    /// `clone3`, or `clone` where the kernel or a seccomp filter refuses `clone3`. In the
    /// child: [`Birth::child`], never returns.
    fn clone(
        &self,
        status: &OwnedFd,
        setup: &dyn Fn() -> io::Result<()>,
    ) -> io::Result<(i32, OwnedFd)> {
        let mut pidfd: RawFd = -1;
        let args = CloneArgs {
            flags: CLONE_PIDFD
                | if self.into.is_some() {
                    CLONE_INTO_CGROUP
                } else {
                    0
                },
            pidfd: &mut pidfd as *mut RawFd as u64,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: self.into.as_ref().map_or(0, |fd| fd.as_raw_fd() as u64),
            ..CloneArgs::default()
        };
        // SAFETY: without CLONE_VM the child gets a copy of this address space, as after
        // fork; it runs only `Birth::child`, which makes async-signal-safe system calls
        // and never returns. `args` outlives the call.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            self.child(status.as_raw_fd(), setup);
        }
        if pid > 0 {
            // SAFETY: CLONE_PIDFD put a new descriptor, ours alone, in `pidfd`.
            return Ok((pid as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) || self.into.is_some() {
            return Err(err);
        }
        // SAFETY: as above; the plain `clone` of a fork (only SIGCHLD set).
        let pid =
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
        match pid {
            0 => self.child(status.as_raw_fd(), setup),
            pid if pid > 0 => {
                // Nothing awaited since the clone: the reaper, a task of this runtime's
                // thread, has not collected the child, so the pid is still ours.
                Ok((pid as i32, sys::pidfd_open(pid as i32)?))
            }
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The child: set up, report, move into the v1 cgroups, `exec`. Only system calls on
    /// what [`Birth::new`] prepared.
    fn child(&self, status: RawFd, setup: &dyn Fn() -> io::Result<()>) -> ! {
        let report = |stage: Stage, errno: i32| {
            let mut record = [0u8; RECORD];
            record[0] = stage as u8;
            record[1..].copy_from_slice(&errno.to_le_bytes());
            // SAFETY: a plain write of a stack buffer.
            unsafe { libc::write(status, record.as_ptr().cast(), RECORD) };
        };
        let fail = |stage: Stage, err: io::Error| -> ! {
            report(stage, err.raw_os_error().unwrap_or(libc::EIO));
            // SAFETY: ends this child at once, as a failed exec would.
            unsafe { libc::_exit(127) }
        };
        if let Err(err) = self.set_up(setup) {
            fail(Stage::Setup, err);
        }
        report(Stage::Ready, 0);
        for procs in &self.join {
            // SAFETY: a plain write into a descriptor opened before the clone. "0" is the
            // writing process itself.
            if unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) } < 0 {
                fail(Stage::Join, io::Error::last_os_error());
            }
        }
        // SAFETY: every pointer is into `self`, alive until the exec replaces this image.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            )
        };
        fail(Stage::Exec, io::Error::last_os_error())
    }

    /// What the child does before it reports `Ready`.
    fn set_up(&self, setup: &dyn Fn() -> io::Result<()>) -> io::Result<()> {
        sys::child::reset_signals();
        let fds = self.stdio.each_ref().map(|fd| fd.as_raw_fd());
        sys::child::place_stdio(fds)?;
        if let Some(pgid) = self.group {
            nix::unistd::setpgid(
                nix::unistd::Pid::from_raw(0),
                nix::unistd::Pid::from_raw(pgid),
            )?;
        }
        nix::unistd::chdir(self.cwd.as_c_str())?;
        setup()
    }
}

/// `fd`, moved to a number above 9 (close-on-exec): clear of what the child puts at 0 to 3.
fn above_9(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 9 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 10)?)
}

/// A child just cloned: set up, or still setting up.
pub struct Born {
    /// Its pid.
    pub pid: i32,
    /// Its pidfd.
    pub pidfd: OwnedFd,
    /// Its report: set up ([`Report::ready`]), then in every cgroup and `exec`ed
    /// ([`Report::done`]).
    pub report: Report,
}

/// What a child reports through its status pipe, read without blocking the runtime.
pub struct Report {
    /// The status pipe's read end.
    fd: OwnedFd,
    /// What has arrived of a record so far (a wait may be cancelled halfway).
    record: [u8; RECORD],
    /// How many bytes of it.
    got: usize,
}

impl Report {
    /// Waits until the child is set up (`Ok`), or says which stage failed. Cancel-safe:
    /// what was read is kept.
    pub async fn ready(&mut self) -> io::Result<()> {
        match self.next().await? {
            Some((Stage::Ready, _)) => Ok(()),
            Some((stage, errno)) => Err(failed(stage, errno)),
            None => Err(io::Error::other(
                "the process ended before it was set up (killed?)",
            )),
        }
    }

    /// After [`Report::ready`]: waits until the child is in its cgroups and has `exec`ed
    /// (`Ok`), or says what failed. Cancel-safe.
    pub async fn done(&mut self) -> io::Result<()> {
        match self.next().await? {
            None => Ok(()),
            Some((stage, errno)) => Err(failed(stage, errno)),
        }
    }

    /// The next record (`None`: end-of-file), on the runtime's reactor.
    async fn next(&mut self) -> io::Result<Option<(Stage, i32)>> {
        use tokio::io::{unix::AsyncFd, Interest};
        rustix::io::ioctl_fionbio(&self.fd, true)?;
        // SAFETY: `self.fd` stays open, the same descriptor, while `fd` (dropped when this
        // function returns or is cancelled, before `self` can be) has it registered.
        let fd = unsafe { AsyncFd::register_with_interest(self.fd.as_fd(), Interest::READABLE) }?;
        while self.got < RECORD {
            let mut ready = fd.readable().await?;
            match ready.try_io(|fd| {
                Ok(nix::unistd::read(
                    fd.get_ref(),
                    &mut self.record[self.got..],
                )?)
            }) {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => self.got += n,
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        let record = parse(&self.record[..self.got]);
        self.got = 0;
        Ok(record)
    }
}

/// A whole record, or `None` (end-of-file, or a child killed mid-record).
fn parse(record: &[u8]) -> Option<(Stage, i32)> {
    let bytes: [u8; RECORD] = record.try_into().ok()?;
    let stage = Stage::from_byte(bytes[0])?;
    let errno = i32::from_le_bytes(bytes[1..].try_into().ok()?);
    Some((stage, errno))
}

/// The error a failed stage reported.
fn failed(stage: Stage, errno: i32) -> io::Error {
    let err = io::Error::from_raw_os_error(errno);
    io::Error::new(err.kind(), Failed { stage, source: err })
}

/// A stage of the child that failed, and the kernel's error.
#[derive(Debug)]
pub struct Failed {
    stage: Stage,
    source: io::Error,
}

impl Failed {
    /// The kernel's error code.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage.what(), self.source)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The OS error code of `err`, also when it is a child's [`Failed`] stage.
pub fn errno_of(err: &io::Error) -> Option<i32> {
    err.raw_os_error()
        .or_else(|| err.get_ref()?.downcast_ref::<Failed>()?.errno())
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (version 2, with `cgroup`: 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::cgroup::tests::{cgroup2_mount, may_write_cgroups};

    fn wait(pid: i32) -> nix::sys::wait::WaitStatus {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("waitpid")
    }

    /// Spawns `birth` with `setup`, which in these tests only returns a value, and waits
    /// until it is set up.
    async fn spawn(birth: Birth, setup: fn() -> io::Result<()>) -> io::Result<Born> {
        // SAFETY: `setup` returns a value made on the stack: no allocation, no lock.
        let mut born = unsafe { birth.spawn(&setup) }?;
        match born.report.ready().await {
            Ok(()) => Ok(born),
            Err(err) => {
                wait(born.pid);
                Err(err)
            }
        }
    }

    fn birth(args: &[&str]) -> Birth {
        Birth::new(
            Path::new("/bin/sh"),
            args.iter().map(OsStr::new),
            [("PATH", "/bin:/usr/bin")],
            Path::new("/"),
            [None, None, None],
        )
        .expect("birth")
    }

    #[tokio::test]
    async fn a_child_is_set_up_and_execs() {
        let mut born = spawn(birth(&["sh", "-c", "exit 7"]), || Ok(()))
            .await
            .expect("spawn");
        born.report.done().await.expect("exec");
        assert_eq!(
            wait(born.pid),
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(born.pid), 7)
        );
    }

    #[tokio::test]
    async fn each_stage_reports_its_failure() {
        let err = spawn(birth(&["sh"]), || {
            Err(io::Error::from_raw_os_error(libc::EACCES))
        })
        .await
        .err()
        .expect("setup fails");
        assert_eq!(errno_of(&err), Some(libc::EACCES), "{err}");
        assert!(err.to_string().contains("set up the process"), "{err}");
        let mut missing = birth(&["x"]);
        missing.program = CString::new("/no/such/program").expect("c");
        let mut born = spawn(missing, || Ok(())).await.expect("set up");
        let err = born.report.done().await.expect_err("exec fails");
        assert_eq!(errno_of(&err), Some(libc::ENOENT), "{err}");
        wait(born.pid);
    }

    /// The real cgroup2 mount: the child is born in the cgroup (its `/proc/<pid>/cgroup`
    /// names it before it ran anything), and a v1-style move of itself works too.
    #[tokio::test]
    async fn a_child_is_born_in_its_v2_cgroup() {
        if !may_write_cgroups() {
            return;
        }
        let root = cgroup2_mount().expect("a cgroup2 is mounted");
        let path = format!("shim-sample-spawn-{}", std::process::id());
        let (born_in, moved_into) = (
            root.join(&path).join("born"),
            root.join(&path).join("moved"),
        );
        for dir in [&born_in, &moved_into] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        let result = async {
            let mut b = birth(&["sh", "-c", "exec sleep 1"]);
            b.cgroup(Some(&born_in), &[])?;
            let mut born = spawn(b, || Ok(())).await?;
            let seen = std::fs::read_to_string(format!("/proc/{}/cgroup", born.pid))?;
            born.report.done().await?;
            let _ = sys::signal_pidfd(&born.pidfd, sys::Signal::KILL);
            wait(born.pid);
            let mut b = birth(&["sh", "-c", "exec sleep 1"]);
            b.cgroup(None, &[moved_into.join("cgroup.procs")])?;
            let mut born = spawn(b, || Ok(())).await?;
            born.report.done().await?;
            let moved = std::fs::read_to_string(moved_into.join("cgroup.procs"))?;
            let _ = sys::signal_pidfd(&born.pidfd, sys::Signal::KILL);
            wait(born.pid);
            io::Result::Ok((seen, moved, born.pid))
        }
        .await;
        for dir in [&born_in, &moved_into, &root.join(&path)] {
            let _ = std::fs::remove_dir(dir);
        }
        let (seen, moved, pid) = result.expect("spawn into cgroups");
        assert!(!root.join(&path).exists(), "a cgroup was left: {path}");
        assert!(seen.contains(&format!("0::/{path}/born")), "{seen}");
        assert!(
            moved.split_whitespace().any(|p| p == pid.to_string()),
            "{pid} not in {moved}"
        );
    }
}
