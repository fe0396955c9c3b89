//! Fifty lifecycles and fifty short-lived tasks: every exit code right, and nothing left.

use integration::{soak::soak, Containerd};

#[test]
fn fifty_cycles_leave_nothing_behind() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let report = soak(&cd, 50).expect("every cycle and exit code");
    eprintln!("{report:#?}");
    assert_eq!(report.zombies, 0, "{report:?}");
    assert_eq!(report.shims, 0, "{report:?}");
    assert_eq!(report.sockets_left, 0, "{report:?}");
    assert_eq!(report.fifos_left, 0, "{report:?}");
    assert_eq!(report.bundles_left, 0, "{report:?}");
    let (baseline, after) = report.containerd_fds;
    assert!(
        after <= baseline,
        "containerd's descriptors grew from {baseline} to {after}"
    );
}
