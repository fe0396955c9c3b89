//! The files the shim keeps in the bundle directory, beside containerd's `config.json`.
//!
//! containerd creates the bundle (`<state>/io.containerd.runtime.v2.task/<ns>/<id>`), runs
//! `start` and `delete` with it as the working directory, and removes it after the task is
//! deleted. Two files of ours live there:
//!
//! - `address`: the ttrpc address the shim serves, as printed by `start` (containerd reads it
//!   again when it restarts and reconnects to running shims);
//! - `init.pid`: the init process's pid and its start time in clock ticks, so that `delete`,
//!   run after a shim crash, can kill what is left of the task without ever mistaking a
//!   recycled pid for it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// File holding the shim's ttrpc address.
pub const ADDRESS_FILE: &str = "address";

/// File holding `<pid> <start time>` of the init process.
pub const INIT_PID_FILE: &str = "init.pid";

/// Writes the address file.
pub fn write_address(bundle: &Path, address: &str) -> Result<()> {
    let path = bundle.join(ADDRESS_FILE);
    fs::write(&path, address).map_err(Error::io(format!("write {}", path.display())))
}

/// Reads the address file, if there is one.
pub fn read_address(bundle: &Path) -> Option<String> {
    fs::read_to_string(bundle.join(ADDRESS_FILE)).ok()
}

/// The socket's path in the file system: `unix:///run/x` names `/run/x`.
pub fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.strip_prefix("unix://").unwrap_or(address))
}

/// Records the init process, see the module docs.
pub fn write_init_pid(bundle: &Path, pid: i32, start_time: u64) -> Result<()> {
    let path = bundle.join(INIT_PID_FILE);
    fs::write(&path, format!("{pid} {start_time}\n"))
        .map_err(Error::io(format!("write {}", path.display())))
}

/// Reads back what [`write_init_pid`] wrote.
pub fn read_init_pid(bundle: &Path) -> Option<(i32, u64)> {
    let content = fs::read_to_string(bundle.join(INIT_PID_FILE)).ok()?;
    let mut fields = content.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let start_time = fields.next()?.parse().ok()?;
    Some((pid, start_time))
}

/// Forgets the init process (it has been deleted).
pub fn remove_init_pid(bundle: &Path) {
    let _ = fs::remove_file(bundle.join(INIT_PID_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_pid_round_trips_and_tolerates_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_init_pid(dir.path()), None);
        write_init_pid(dir.path(), 4242, 987654).expect("write");
        assert_eq!(read_init_pid(dir.path()), Some((4242, 987654)));
        fs::write(dir.path().join(INIT_PID_FILE), "4242").expect("write");
        assert_eq!(read_init_pid(dir.path()), None);
        remove_init_pid(dir.path());
        remove_init_pid(dir.path());
        assert_eq!(read_init_pid(dir.path()), None);
    }

    #[test]
    fn socket_paths_drop_the_scheme() {
        assert_eq!(
            socket_path("unix:///run/containerd/s/ab"),
            PathBuf::from("/run/containerd/s/ab")
        );
        assert_eq!(socket_path("/tmp/x.sock"), PathBuf::from("/tmp/x.sock"));
    }
}
