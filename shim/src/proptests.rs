//! Property tests for the code that parses or validates what the shim is sent or reads:
//! it must never panic, and must accept exactly what it should.

use proptest::prelude::*;

use crate::{
    sys::procfs,
    task::bundle,
    task::container::{validate_id, MAX_ID_LEN},
    task::process::validate_signal,
    task::spec,
};

proptest! {
    #[test]
    fn stat_lines_round_trip_whatever_the_command_name(
        pid in 1i32..4_000_000,
        comm in "[^\n]{0,15}",
        state in "[RSDZTtXI]",
        ppid in 0i32..4_000_000,
        pgid in 0i32..4_000_000,
        start in any::<u64>(),
    ) {
        let line = format!(
            "{pid} ({comm}) {state} {ppid} {pgid} 1 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 {start} 100 2 0"
        );
        let stat = procfs::parse_stat(&line).expect("well-formed line");
        prop_assert_eq!(stat.pid, pid);
        prop_assert_eq!(stat.comm, comm);
        prop_assert_eq!((stat.ppid, stat.pgid, stat.start_time), (ppid, pgid, start));
    }

    #[test]
    fn stat_parsing_never_panics(line in ".*") {
        let _ = procfs::parse_stat(&line);
    }

    #[test]
    fn ids_are_accepted_exactly_when_they_are_safe(id in ".{0,100}") {
        let safe = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id != "."
            && !id.contains("..")
            && !id.chars().any(|c| c == '/' || c.is_control());
        prop_assert_eq!(validate_id("task", &id).is_ok(), safe);
    }

    #[test]
    fn plain_ids_are_accepted(id in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,75}") {
        prop_assume!(!id.contains(".."));
        prop_assert!(validate_id("exec", &id).is_ok());
    }

    #[test]
    fn signals_are_valid_exactly_in_the_kernel_range(signal in any::<u32>()) {
        let valid = (1..=libc::SIGRTMAX() as u32).contains(&signal);
        prop_assert_eq!(validate_signal(signal).is_ok(), valid);
    }

    #[test]
    fn environment_entries_split_at_the_first_equals(key in "[A-Za-z_][A-Za-z0-9_]{0,20}", value in ".*") {
        let entry = format!("{key}={value}");
        prop_assert_eq!(spec::split_env(&entry), Some((key, value)));
    }

    #[test]
    fn init_pid_files_round_trip(pid in 1i32..i32::MAX, start in any::<u64>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        bundle::write_init_pid(dir.path(), pid, start).expect("write");
        prop_assert_eq!(bundle::read_init_pid(dir.path()), Some((pid, start)));
    }

    #[test]
    fn garbage_init_pid_files_are_ignored(content in ".*") {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(bundle::INIT_PID_FILE), &content).expect("write");
        let _ = bundle::read_init_pid(dir.path());
    }
}
