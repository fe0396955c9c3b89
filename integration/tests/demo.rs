//! `shim-demo`, the built binary, against a private containerd: the walkthrough's JSON
//! steps, its errors, and the subcommands' round trip.

use std::time::Duration;

use assert_cmd::Command;
use integration::{demo_binary, Containerd};
use serde_json::Value;

fn demo(cd: &Containerd) -> Command {
    let mut command = Command::new(demo_binary());
    command
        .arg("--address")
        .arg(&cd.address)
        .env("CONTAINERD_NAMESPACE", cd.namespace())
        .timeout(Duration::from_secs(120));
    command
}

/// Runs `shim-demo <tour> --json`, which must succeed; returns its steps and its stdout.
fn json_steps(cd: &Containerd, tour: &str) -> (Vec<Value>, String) {
    json_steps_with(cd, &[tour])
}

/// Runs `shim-demo <args...> --json`, which must succeed; returns its steps and stdout.
fn json_steps_with(cd: &Containerd, args: &[&str]) -> (Vec<Value>, String) {
    let tour = args.first().copied().unwrap_or_default();
    let output = demo(cd)
        .args(args)
        .arg("--json")
        .output()
        .expect("run shim-demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "shim-demo {tour} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    (steps, stdout)
}

#[test]
fn walkthrough_json_reports_every_step_with_143_and_130() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let (steps, stdout) = json_steps(&cd, "walkthrough");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "preflight",
            "image",
            "create_container",
            "start_task",
            "process_tree",
            "oci_mode",
            "task_output",
            "delete_refused",
            "kill",
            "delete_task",
            "attached_sigint",
            "cleanup"
        ]
    );
    assert!(steps.iter().all(|s| s["ok"] == true), "{stdout}");
    let step =
        |name: &str| steps.iter().find(|s| s["step"] == name).expect("step")["observed"].clone();
    assert_eq!(step("start_task")["status"], "RUNNING");
    assert!(step("start_task")["pid"].as_u64().is_some_and(|p| p > 1));
    assert_eq!(
        step("process_tree")["task_pgid"],
        step("process_tree")["task_pid"]
    );
    // In the cgroup shim-demo's spec names, as `ctr` names it.
    assert_eq!(
        step("process_tree")["cgroup"],
        format!("/{}/shim-test", cd.namespace())
    );
    // The OCI mode's container: pid 1 of its own pid namespace, in its own root.
    let oci = step("oci_mode");
    assert_eq!(oci["ns_pids"][1], 1, "{oci}");
    assert_eq!(oci["own_root"], true, "{oci}");
    assert_eq!(step("kill")["status"], "STOPPED");
    assert_eq!(step("kill")["shim_children"], 0);
    assert_eq!(step("delete_task")["exit_code"], 143);
    assert_eq!(
        step("delete_task")["events"],
        serde_json::json!([
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ])
    );
    assert_eq!(step("attached_sigint")["exit_code"], 130);

    // It cleaned up after itself: no container, no image it imported, no shim.
    assert!(!cd.ctr_ok(&["container", "ls"]).contains("shim-test"));
    assert!(!cd
        .ctr_ok(&["image", "ls"])
        .contains(integration::image::IMAGE));
    cd.wait_shims_gone();
}

#[test]
fn unreachable_containerd_is_a_clear_error_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(demo_binary())
        .arg("--address")
        .arg(dir.path().join("containerd.sock"))
        .args(["walkthrough", "--yes"])
        .timeout(Duration::from_secs(30))
        .output()
        .expect("run shim-demo");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("containerd is not reachable"), "{stderr}");
    assert!(stderr.contains("make demo"), "{stderr}");
    // The cause once, not repeated by every layer of the error chain.
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn a_runtime_without_its_shim_binary_is_explained() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let id = ["--id", "no-shim"];
    demo(&cd)
        .args(["create", "--runtime", "com.example.missing.v2"])
        .args(id)
        .assert()
        .success();
    let output = demo(&cd)
        .args(["start", "--detach"])
        .args(id)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("containerd-shim-missing-v2"), "{stderr}");
    assert!(stderr.contains("Install it"), "{stderr}");
    demo(&cd).args(["cleanup"]).args(id).assert().success();
    assert!(!cd.ctr_ok(&["container", "ls"]).contains("no-shim"));
}

#[test]
fn subcommands_round_trip() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    demo(&cd).arg("create").assert().success();
    assert!(
        String::from_utf8_lossy(&demo(&cd).arg("ls").output().expect("ls").stdout)
            .contains("com.example.sample.v2")
    );
    let started = demo(&cd)
        .args(["start", "--detach"])
        .output()
        .expect("start");
    assert!(
        started.status.success() && started.stdout.is_empty(),
        "{started:?}"
    );
    let ps =
        String::from_utf8_lossy(&demo(&cd).arg("ps").output().expect("ps").stdout).into_owned();
    assert!(
        ps.lines()
            .any(|l| l.starts_with("shim-test") && l.ends_with("RUNNING")),
        "{ps}"
    );

    demo(&cd)
        .args(["kill", "--signal", "TERM"])
        .assert()
        .success();
    cd.wait_status("shim-test", "STOPPED");
    let removed = demo(&cd).arg("rm").output().expect("rm");
    assert!(removed.status.success(), "{removed:?}");
    assert!(String::from_utf8_lossy(&removed.stderr).contains("143 = 128 + 15 (SIGTERM)"));
    assert!(
        !String::from_utf8_lossy(&demo(&cd).arg("ls").output().expect("ls").stdout)
            .contains("shim-test")
    );
    demo(&cd).arg("cleanup").assert().success();
    cd.wait_shims_gone();
}

/// `shim-demo pod --json` against a containerd with the CRI plugin: every step holds, with
/// the figures a reader is told about; the image it had to import and the pod are gone.
#[test]
fn the_pod_tour_runs_every_step_over_the_cri_api() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    // As on a daemon where the demo has to bring its own image (`make demo-pod`).
    cd.ctr_ok(&[
        "--namespace",
        "k8s.io",
        "images",
        "rm",
        integration::image::IMAGE,
    ]);
    let (steps, stdout) = json_steps(&cd, "pod");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "preflight",
            "sandbox",
            "containers",
            "namespaces",
            "log_file",
            "exec_sync",
            "stop",
            "removal",
            "cleanup"
        ]
    );
    assert!(steps.iter().all(|s| s["ok"] == true), "{stdout}");
    let step =
        |name: &str| steps.iter().find(|s| s["step"] == name).expect("step")["observed"].clone();
    assert_eq!(step("sandbox")["state"], "READY");
    assert_eq!(step("sandbox")["pause_comm"], "pause");
    let shim = step("sandbox")["shim_pid"].clone();
    assert_eq!(
        step("containers")["parents"],
        serde_json::json!([shim, shim])
    );
    assert_eq!(step("exec_sync")["exit_code"], 3);
    assert_eq!(step("stop")["clock_exit"], 143);
    assert_eq!(step("stop")["stubborn_exit"], 137);
    assert_eq!(step("removal")["shim_exited"], true);
    assert_eq!(step("namespaces")["in_host_pid_namespace"], true);
    cd.wait_shims_gone();
    let images = cd.ctr_ok(&["--namespace", "k8s.io", "images", "ls", "-q"]);
    assert!(!images.contains(integration::image::IMAGE), "{images}");
}

/// The pod tour with the OCI mode's handler (`make demo-pod-oci`): the same steps, and the
/// pod's processes in the pause's namespaces instead of the host's.
#[test]
fn the_pod_tour_runs_in_real_containers_with_the_oci_handler() {
    let Some(cd) = Containerd::start_cri() else {
        return;
    };
    let image = integration::image::BUSYBOX;
    let args = [
        "pod",
        "--handler",
        integration::OCI_HANDLER,
        "--image",
        image,
    ];
    let (steps, stdout) = json_steps_with(&cd, &args);
    assert!(steps.iter().all(|s| s["ok"] == true), "{stdout}");
    let step =
        |name: &str| steps.iter().find(|s| s["step"] == name).expect("step")["observed"].clone();
    assert_eq!(step("preflight")["oci"], true, "{stdout}");
    let namespaces = step("namespaces");
    assert_eq!(namespaces["pause_pid_inside"], 1, "{namespaces}");
    assert_eq!(
        namespaces["shares_pause_pid_namespace"], true,
        "{namespaces}"
    );
    assert_eq!(namespaces["in_host_pid_namespace"], false, "{namespaces}");
    assert_eq!(step("stop")["clock_exit"], 143);
    assert_eq!(step("stop")["stubborn_exit"], 137);
    assert_eq!(step("removal")["shim_exited"], true);
    cd.wait_shims_gone();
}

/// An installed containerd often has the CRI plugin disabled: exit code 2 and what to do.
#[test]
fn the_pod_tour_without_the_cri_plugin_exits_2_and_says_why() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let output = demo(&cd).args(["pod", "--yes"]).output().expect("run");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CRI plugin"), "{stderr}");
    assert!(stderr.contains("make demo-pod"), "{stderr}");
}
