//! The OCI mode: real containers through an OCI runtime (runc, then crun), driven by `ctr`.
//!
//! Each test runs the same steps with every runtime in [`RUNTIMES`], in one private
//! containerd: the runtime is chosen per container by `ctr run --runtime-config-path FILE`,
//! where FILE says `binary_name = "runc"` (or `"crun"`), as a user chooses it.

use std::path::PathBuf;

use integration::{stderr, Containerd, RUNTIME};

/// The OCI runtimes every test runs with (Debian's `runc` and `crun`).
const RUNTIMES: &[&str] = &["runc", "crun"];

/// Writes the options file selecting `binary`; returns its path.
fn config(cd: &Containerd, binary: &str) -> String {
    let path: PathBuf = cd.dir().join(format!("{binary}.toml"));
    std::fs::write(&path, format!("binary_name = \"{binary}\"\n")).expect("write the config");
    path.display().to_string()
}

/// `ctr run <mode>` of `args` in the busybox image as `id`, in the OCI mode with `binary`.
fn run(cd: &Containerd, binary: &str, mode: &[&str], id: &str, args: &[&str]) -> std::process::Output {
    let config = config(cd, binary);
    let image = cd.import_busybox();
    let mut full = vec!["run"];
    full.extend_from_slice(mode);
    full.extend_from_slice(&["--runtime", RUNTIME, "--runtime-config-path", &config, image, id]);
    full.extend_from_slice(args);
    cd.ctr_output(&full)
}

#[test]
fn a_container_is_pid_1_in_the_image_root_and_exits_with_its_code() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    for binary in RUNTIMES {
        let id = format!("oci-exit-{binary}");
        let out = run(&cd, binary, &["--rm"], &id, &["sh", "-c", "echo pid $$; ls /; echo oops >&2; exit 3"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{binary}: {stdout}\n{}", stderr(&out));
        assert!(stdout.starts_with("pid 1\n"), "{binary}: {stdout}");
        assert!(stdout.contains("busybox") || stdout.contains("bin\n"), "{binary}: {stdout}");
        assert_eq!(stderr(&out).trim(), "oops", "{binary}");
    }
}
