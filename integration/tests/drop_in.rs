//! The shim in runc-v2's place, configured the ways an operator configures runc-v2.
//!
//! - **By its binary name**: installed as `containerd-shim-runc-v2` first on containerd's
//!   `PATH` ([`Containerd::start_drop_in`]), it is what containerd runs for
//!   `io.containerd.runc.v2`, on every version; `ctr run --runc-binary/--runc-root/
//!   --runc-systemd-cgroup` and a CRI handler's runc table reach it as runc-v2's typed
//!   options.
//! - **By `runtime_path`** (containerd 1.7 and later): the handler [`DROP_IN_HANDLER`].
//! - **Our runtime type with runc's option names** in an options file: each option as
//!   runc-v2 passes it to the runtime, seen by a wrapper that logs its command lines.
//!
//! And the refusal: runc's table on our runtime type under containerd 1.6's CRI plugin
//! reaches the shim empty; the pod is refused, never run on the host.

use std::{fs, path::Path, time::Duration};

use integration::{
    image, poll_until, proc, stderr, Containerd, DROP_IN_HANDLER, RUNC_TABLE_HANDLER,
};
use shim_demo::cri::{proto::ContainerState, Cri};

/// A process's pid namespace, as `/proc/<pid>/ns/pid` names it.
fn pid_namespace(pid: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Whether containerd is 1.7 or later: it honours `runtime_path` and passes a non-runc
/// handler's table as `ConfigBody`.
fn honours_runtime_path(cd: &Containerd) -> bool {
    let version = cd.server_version();
    !(version.starts_with("v1.6") || version.starts_with("1.6"))
}

/// `ctr run --runtime io.containerd.runc.v2` on a daemon whose runc-v2 is ours: real
/// containers (a pid namespace of their own) through runc, served by our binary; `Root`
/// joined with the namespace; `SystemdCgroup` passed to runc.
#[test]
fn ctr_runs_runc_v2_by_its_name_with_runc_options() {
    let Some(cd) = Containerd::start_drop_in(false) else {
        return;
    };
    let busybox = cd.import_busybox();
    let root = cd.dir().join("runc-root");
    let root_arg = root.display().to_string();
    cd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.runc.v2",
        "--runc-binary",
        "runc",
        "--runc-root",
        &root_arg,
        busybox,
        "dropped-in",
        "sleep",
        "1000",
    ]);
    let pid = cd.wait_status("dropped-in", "RUNNING");
    assert_eq!(
        cd.shim_pids().len(),
        1,
        "our binary serves io.containerd.runc.v2"
    );
    assert_ne!(
        pid_namespace(&pid.to_string()),
        pid_namespace("self"),
        "a pid namespace of its own: a real container"
    );
    let state = root.join(cd.namespace()).join("dropped-in/state.json");
    assert!(
        state.is_file(),
        "runc's state under Root/<namespace>: {}",
        state.display()
    );
    cd.kill_and_remove("dropped-in", "SIGKILL");

    // No options at all: under runc-v2's name, runc-v2's defaults.
    let out = cd.ctr_output(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runc.v2",
        busybox,
        "defaults",
        "sh",
        "-c",
        "echo pid $$",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pid 1",
        "{}",
        stderr(&out)
    );

    // SystemdCgroup: runc gets --systemd-cgroup. This machine may have no systemd; runc
    // then says so, which shows the flag reached it.
    let systemd = Path::new("/run/systemd/system").is_dir();
    let cgroup = "system.slice:sample-test:with-systemd";
    let out = cd.ctr_output(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runc.v2",
        "--runc-systemd-cgroup",
        "--cgroup",
        cgroup,
        busybox,
        "with-systemd",
        "cat",
        "/proc/self/cgroup",
    ]);
    if systemd {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("sample-test-with-systemd.scope"),
            "{text} {}",
            stderr(&out)
        );
    } else {
        eprintln!("no systemd on this machine: runc's own refusal shows the flag reached it");
        assert!(
            !out.status.success(),
            "runc --systemd-cgroup without systemd"
        );
        let message = stderr(&out).to_lowercase();
        assert!(
            message.contains("systemd") || message.contains("dbus"),
            "{message}"
        );
        cd.ctr_output(&["container", "rm", "with-systemd"]);
    }
    cd.wait_shims_gone();
}

/// A wrapper runtime that logs each command line (and for `create`, the owner of the
/// stdout it was given: runc then hands it to the container's user), then runs runc without
/// `--systemd-cgroup` (this machine may have no systemd).
const WRAPPER: &str = "#!/bin/sh\necho \"$*\" >> \"$0.log\"\n\
    case \" $* \" in *\" create \"*) stat -L -c 'stdio %u:%g' /proc/self/fd/3 3>&1 >> \"$0.log\";; esac\n\
    for a; do shift; [ \"$a\" = --systemd-cgroup ] || set -- \"$@\" \"$a\"; done\n\
    exec runc \"$@\"\n";

/// Our runtime type with runc-v2's option names in the options file: each one reaches the
/// runtime where runc-v2 puts it, and `IoUid`/`IoGid` own the pipes of the container's
/// stdio.
#[test]
fn runc_v2_options_reach_the_runtime_as_runc_v2_passes_them() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let busybox = cd.import_busybox();
    let wrapper = cd.dir().join("logging-runc");
    fs::write(&wrapper, WRAPPER).expect("write the wrapper");
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let root = cd.dir().join("root");
    let options = cd.dir().join("runc-options.toml");
    fs::write(
        &options,
        format!(
            "BinaryName = \"{}\"\nRoot = \"{}\"\nSystemdCgroup = true\nNoPivotRoot = true\n\
             NoNewKeyring = true\nIoUid = 1000\nIoGid = 1001\n",
            wrapper.display(),
            root.display()
        ),
    )
    .expect("write the options");
    let options = options.display().to_string();
    let out = cd.ctr_output(&[
        "run",
        "--rm",
        "--runtime-config-path",
        &options,
        "--runtime",
        integration::RUNTIME,
        busybox,
        "optioned",
        "echo",
        "through the pipes",
    ]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through the pipes"
    );
    let log = fs::read_to_string(format!("{}.log", wrapper.display())).expect("the wrapper's log");
    assert!(
        log.contains("stdio 1000:1001"),
        "the stdout pipe belongs to IoUid:IoGid: {log}"
    );
    let state_dir = format!("--root {}/{}", root.display(), cd.namespace());
    let create = log
        .lines()
        .find(|l| l.contains(" create "))
        .expect("a create");
    for flag in ["--no-pivot", "--no-new-keyring"] {
        assert!(create.contains(flag), "{flag} in {create}");
    }
    for line in log.lines().filter(|l| !l.starts_with("stdio")) {
        assert!(
            line.contains("--systemd-cgroup"),
            "--systemd-cgroup in {line}"
        );
        assert!(line.contains(&state_dir), "{state_dir} in {line}");
    }
    assert!(log.lines().any(|l| l.contains(" delete ")), "{log}");
}

/// One `Root` shared by two namespaces, the same id in each: a create that fails in one
/// leaves the other's container running (runc-v2 joins `Root` with the namespace; and a
/// failed `create` is never followed by a `delete --force` of the id).
#[test]
fn the_same_id_in_two_namespaces_never_meets() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let busybox = cd.import_busybox();
    let options = cd.dir().join("shared-root.toml");
    let root = cd.dir().join("shared-root");
    fs::write(
        &options,
        format!("BinaryName = \"runc\"\nRoot = \"{}\"\n", root.display()),
    )
    .expect("write the options");
    let options = options.display().to_string();
    let run = |namespace: &str, args: &[&str]| {
        let mut command = cd.ctr();
        command.args([
            "--namespace",
            namespace,
            "run",
            "--runtime-config-path",
            &options,
        ]);
        command.args(["--runtime", integration::RUNTIME]).args(args);
        command.output().expect("ctr run")
    };
    let ours = cd.namespace().to_string();
    let out = run(&ours, &["-d", busybox, "twin", "sleep", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = cd.wait_status("twin", "RUNNING");

    let other = format!("{ours}-other");
    let archive = cd.dir().join("busybox-other.tar");
    image::write_busybox_archive(&archive, busybox).expect("busybox archive");
    let archive = archive.display().to_string();
    cd.ctr_ok(&["--namespace", &other, "images", "import", &archive]);
    let out = run(&other, &["--rm", busybox, "twin", "no-such-command"]);
    assert!(
        !out.status.success(),
        "a command that does not exist cannot be created"
    );
    assert!(stderr(&out).contains("no-such-command"), "{}", stderr(&out));

    assert_eq!(cd.task_status("twin"), Some((pid, "RUNNING".to_string())));
    assert!(proc::alive(pid), "the first namespace's twin still runs");
    cd.ctr_output(&["--namespace", &other, "container", "rm", "twin"]);
    cd.kill_and_remove("twin", "SIGKILL");
    cd.wait_shims_gone();
}

/// A pod through the CRI plugin on `handler`: its container runs in a pid namespace of its
/// own, served by our binary; then the pod goes.
async fn a_real_pod(cd: &Containerd, handler: &str) {
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = integration::pod::new(cd, &format!("pod-{handler}"));
    let pod_id = cri
        .run_pod(&pod, handler)
        .await
        .unwrap_or_else(|err| panic!("RunPodSandbox on {handler}: {err:?}"));
    let app = shim_demo::cri::container("app", image::BUSYBOX, &["sleep", "1000"], &[]);
    let id = integration::pod::run_container(&mut cri, (&pod_id, &pod), app).await;
    let pid = cri.container_pid(&id).await.expect("the container's pid");
    assert_ne!(
        pid_namespace(&pid.to_string()),
        pid_namespace("self"),
        "{handler}: a pid namespace of its own"
    );
    assert_eq!(
        cd.shim_pids().len(),
        1,
        "{handler}: our binary serves the pod"
    );
    integration::pod::stop(&mut cri, &id, 0).await;
    integration::pod::wait_container(&mut cri, &id, ContainerState::ContainerExited).await;
    integration::pod::remove(&mut cri, &pod_id).await;
    cd.wait_shims_gone();
}

/// The CRI plugin's `runc` handler, runc's options table, on a daemon whose runc-v2 is our
/// binary (every version); on 1.7 and later also a `runtime_path` handler of the usual
/// daemon.
#[tokio::test]
async fn kubernetes_pods_run_on_the_shim_standing_in_for_runc_v2() {
    let Some(cd) = Containerd::start_drop_in(true) else {
        return;
    };
    a_real_pod(&cd, "runc").await;
    drop(cd);
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    if honours_runtime_path(&cd) {
        a_real_pod(&cd, DROP_IN_HANDLER).await;
    } else {
        eprintln!("containerd 1.6 ignores runtime_path: the binary's name is its only way");
    }
}

/// runc's table (`BinaryName`, `SystemdCgroup`) on our runtime type: containerd 1.6 drops
/// both keys and the shim receives options that say nothing; the pod is refused with
/// FailedPrecondition, never run as host processes. 1.7 and later send the table as
/// `ConfigBody`: a real pod.
#[tokio::test]
async fn runc_options_on_our_runtime_type_never_give_a_host_pod() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    if honours_runtime_path(&cd) {
        return a_real_pod(&cd, RUNC_TABLE_HANDLER).await;
    }
    let mut cri = Cri::connect(&cd.address)
        .await
        .expect("the CRI API answers");
    let pod = integration::pod::new(&cd, "refused");
    let err = cri
        .run_pod(&pod, RUNC_TABLE_HANDLER)
        .await
        .expect_err("a pod with options that say nothing is refused");
    let message = err.message().to_string();
    eprintln!("RunPodSandbox: {message}");
    for needle in [
        "refusing to run a Kubernetes container as host processes",
        "mode = \"host\"",
        "containerd-shim-runc-v2",
    ] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
    assert!(
        message.contains("precondition") || message.contains("FailedPrecondition"),
        "{message}"
    );
    poll_until(
        Duration::from_secs(10),
        "the refused pod's shim to go",
        || cd.shim_pids().is_empty().then_some(()),
    );
}

/// `-info`, as containerd 2.x runs it: runc's `features` in a `RuntimeInfo`, so the CRI
/// plugin draws the same conclusions for our handlers as for runc-v2 (user namespaces,
/// recursive read-only mounts); on containerd 2.x its log says which.
#[test]
fn info_reports_the_runtime_features_as_runc_v2_does() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let info = std::process::Command::new(&cd.shim)
        .arg("-info")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run -info");
    assert!(info.status.success(), "{}", stderr(&info));
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains(integration::RUNTIME),
        "the shim's name: {text:?}"
    );
    assert!(
        !text.contains("features/Features"),
        "no options: the host mode, which reports no runtime features"
    );
    let mut typed = std::process::Command::new(&cd.shim)
        .arg("-info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run -info");
    // An `Any` of `containerd.runc.v1.Options` with BinaryName (field 6) "runc", as
    // containerd writes it.
    let options = [&[0x32, 4][..], b"runc"].concat();
    let url = b"containerd.runc.v1.Options";
    let any = [
        &[0x0a, url.len() as u8][..],
        url,
        &[0x12, options.len() as u8],
        &options,
    ]
    .concat();
    std::io::Write::write_all(typed.stdin.as_mut().expect("stdin"), &any).expect("write");
    drop(typed.stdin.take());
    let info = typed.wait_with_output().expect("-info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("types.containerd.io/opencontainers/runtime-spec/1/features/Features"),
        "{text:?}"
    );
    let runc = std::process::Command::new("runc")
        .arg("features")
        .output()
        .expect("runc features");
    let ours: serde_json::Value = serde_json::from_str(&text[text.find('{').expect("JSON")..])
        .expect("the features are runc's JSON");
    let theirs: serde_json::Value = serde_json::from_slice(&runc.stdout).expect("runc's JSON");
    assert_eq!(ours, theirs, "runc's features, unchanged");

    let version = cd.server_version();
    if version.starts_with("v1.") || version.starts_with("1.") {
        return eprintln!("containerd {version} does not ask: -info checked directly only");
    }
    // containerd 2.x introspects its io.containerd.runc.v2 handlers at start, with their
    // options (2.1 asks no other runtime type); it logs its verdict on user namespaces,
    // which needs `user` among the namespaces and idmapped mounts.
    let expected = theirs["linux"]["namespaces"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n == "user"))
        && theirs["linux"]["mountExtensions"]["idmap"]["enabled"] == true;
    let said = poll_until(
        Duration::from_secs(10),
        "the CRI plugin's introspection",
        || {
            let needle = format!("runtime \\\"{DROP_IN_HANDLER}\\\" supports CRI userns: ");
            cd.log()
                .lines()
                .find_map(|l| Some(l[l.find(&needle)? + needle.len()..].starts_with("true")))
        },
    );
    eprintln!("containerd says {DROP_IN_HANDLER} supports CRI userns: {said} (runc's features: {expected})");
    assert_eq!(said, expected);
}

/// `ShimCgroup`: at `start`, the shim daemon moves itself into the cgroup the options name
/// (made if missing), before it serves; the container itself goes where its spec says.
#[test]
fn shim_cgroup_holds_the_shim() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let busybox = cd.import_busybox();
    let cgroup = format!("/sample-shim-cgroup-{}", std::process::id());
    let options = cd.dir().join("shim-cgroup.toml");
    fs::write(
        &options,
        format!("BinaryName = \"runc\"\nShimCgroup = \"{cgroup}\"\n"),
    )
    .expect("write the options");
    let options = options.display().to_string();
    let out = cd.ctr_output(&[
        "run",
        "-d",
        "--runtime",
        integration::RUNTIME,
        "--runtime-config-path",
        &options,
        busybox,
        "in-shim-cgroup",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    let init = cd.wait_status("in-shim-cgroup", "RUNNING");
    let of = |pid: i32| fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let shim = of(cd.the_shim());
    assert!(shim.contains(&cgroup), "the shim is in {cgroup}: {shim}");
    assert!(
        !of(init).contains(&cgroup),
        "the container is not: {}",
        of(init)
    );
    cd.kill_and_remove("in-shim-cgroup", "SIGKILL");
    cd.wait_shims_gone();
    for dir in integration::cgroup_dirs(&cgroup) {
        integration::remove_cgroup_tree(&dir);
    }
}
