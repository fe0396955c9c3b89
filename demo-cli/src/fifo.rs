//! The FIFOs a client makes for a task's stdin, stdout and stderr.
//!
//! containerd does not carry a task's output itself: the client creates named pipes and
//! passes their paths in `CreateTask`; the shim opens them and copies the task's streams
//! in and out. `ctr` keeps them under `/run/containerd/fifo`; the demo under
//! `/run/shim-demo/<daemon>/<namespace>/<id>`, where `<daemon>` is a short hash of
//! containerd's socket path, so that two daemons' `shim-test` never share FIFOs. A later
//! `shim-demo attach` finds them through the task's recorded paths.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::DirBuilderExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio::net::unix::pipe;

/// Where the demo keeps its FIFO directories.
pub const FIFO_ROOT: &str = "/run/shim-demo";

/// The directory holding every FIFO the demo made for the containerd at `address`: named
/// by the first 12 hex digits of the SHA-256 of the socket's path.
pub fn daemon_dir(address: &Path) -> PathBuf {
    let hash = Sha256::digest(address.as_os_str().as_bytes());
    let daemon: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Path::new(FIFO_ROOT).join(daemon)
}

/// The three FIFOs of one task.
#[derive(Debug, Clone)]
pub struct FifoSet {
    /// The directory holding them.
    pub dir: PathBuf,
}

impl FifoSet {
    /// The directory for task `id` in `namespace` of the containerd at `address`.
    pub fn for_task(address: &Path, namespace: &str, id: &str) -> FifoSet {
        FifoSet {
            dir: daemon_dir(address).join(namespace).join(id),
        }
    }

    /// Makes a fresh directory (mode 0700) with the three FIFOs (mode 0600).
    pub fn create(&self) -> Result<()> {
        self.remove();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        for path in [self.stdin(), self.stdout(), self.stderr()] {
            let c_path = CString::new(path.as_os_str().as_bytes())?;
            // SAFETY: mkfifo with a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                bail!(
                    "mkfifo {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(())
    }

    /// Removes the directory and its FIFOs, and the parents it leaves empty.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // Then the directories above it that are left empty, `FIFO_ROOT` included: a
        // directory another task still uses is not empty and stays.
        for parent in self.dir.ancestors().skip(1) {
            if std::fs::remove_dir(parent).is_err() || parent == Path::new(FIFO_ROOT) {
                break;
            }
        }
    }

    /// Path of the stdin FIFO.
    pub fn stdin(&self) -> PathBuf {
        self.dir.join("stdin")
    }

    /// Path of the stdout FIFO.
    pub fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    /// Path of the stderr FIFO.
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }

    /// The stdin path as containerd wants it.
    pub fn stdin_path(&self) -> String {
        self.stdin().display().to_string()
    }

    /// The stdout path as containerd wants it.
    pub fn stdout_path(&self) -> String {
        self.stdout().display().to_string()
    }

    /// The stderr path as containerd wants it.
    pub fn stderr_path(&self) -> String {
        self.stderr().display().to_string()
    }
}

/// Opens a FIFO for reading without ever seeing end-of-file while nobody writes: opened
/// read-write, the reader is also a writer. The caller decides when to stop.
pub fn open_reader(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Opens a FIFO for writing without waiting for a reader.
pub fn open_writer(path: &Path) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .with_context(|| format!("open {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_daemon_gets_its_own_directory() {
        let default = daemon_dir(Path::new("/run/containerd/containerd.sock"));
        // `printf %s /run/containerd/containerd.sock | sha256sum | cut -c1-12`
        assert_eq!(default, Path::new("/run/shim-demo/1935db59889b"));
        assert_ne!(default, daemon_dir(Path::new("/tmp/other/containerd.sock")));
    }
}
