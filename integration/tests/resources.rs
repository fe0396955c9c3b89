//! Every hierarchy and the rest of `linux.resources` in the host mode, through `ctr run
//! --config` (a whole spec from a file, as a kubelet's runtime would write it): the task
//! in every mounted hierarchy at its `cgroupsPath` (systemd's named one and the cgroup2
//! mount included, as under runc); cpuset CPUs and memory nodes, hugepage limits, block
//! I/O throttles and the device list applied before the task runs; `ctr task update
//! --resources` changing them; `ctr task metrics` with block I/O and hugepage figures;
//! a block I/O weight refused where the kernel has none; and the cgroup v2 mount alone
//! (`SAMPLE_SHIM_CGROUPS=v2`), where the process is born in its cgroup.
//!
//! Written for this machine's cgroup v1 (with its empty cgroup2 beside it); on a v2-only
//! machine the v1 files are not there and the test says so.

use std::{
    fs,
    path::{Path, PathBuf},
};

use integration::{cgroup_dirs, cgroupfs, proc, stderr, Containerd, RUNTIME};

/// The root disk's `major:minor` (the first block device that is not a loop, RAM or zram
/// device), for the throttles and the device list.
fn a_disk() -> Option<(String, String)> {
    let mut disks: Vec<PathBuf> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    disks.sort();
    disks.into_iter().find_map(|disk| {
        let name = disk.file_name()?.to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            return None;
        }
        let dev = fs::read_to_string(disk.join("dev")).ok()?;
        Some((format!("/dev/{name}"), dev.trim().to_string()))
    })
}

/// A spec file for task `id` running `args` in the host mode, in the cgroup `ctr` would
/// name (`/<namespace>/<id>`), with `resources`.
fn spec_file(cd: &Containerd, id: &str, args: &[&str], resources: serde_json::Value) -> PathBuf {
    let mut spec: serde_json::Value =
        serde_json::from_str(&cd.ctr_ok(&["oci", "spec"])).expect("ctr oci spec");
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["annotations"] = serde_json::json!({ "com.example.sample.process": "spec" });
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{id}", cd.namespace()));
    spec["linux"]["resources"] = resources;
    let file = cd.dir().join(format!("{id}.json"));
    fs::write(&file, spec.to_string()).expect("write the spec");
    file
}

/// `ctr run [-d|--rm] --config <file> <id>` with our runtime.
fn run_config(cd: &Containerd, mode: &str, file: &Path, id: &str) -> std::process::Output {
    let file = file.display().to_string();
    cd.ctr_output(&["run", mode, "--runtime", RUNTIME, "--config", &file, id])
}

fn hugetlb_2mb() -> bool {
    Path::new("/sys/fs/cgroup/hugetlb/hugetlb.2MB.limit_in_bytes").exists()
}

/// The device rules of [`kubelet_resources`].
fn resources_devices() -> Vec<serde_json::Value> {
    kubelet_resources("8:0")["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `Update` of task `id` with the device list `devices` (`shim-demo update --resources`).
fn update_devices(
    cd: &Containerd,
    id: &str,
    devices: Vec<serde_json::Value>,
) -> std::process::Output {
    let file = cd.dir().join("devices.json");
    fs::write(&file, serde_json::json!({ "devices": devices }).to_string()).expect("write");
    cd.shim_demo()
        .args(["update", "--id", id, "--resources"])
        .arg(&file)
        .output()
        .expect("run shim-demo update")
}

/// The resources a kubelet and a device-restricting spec ask for: one CPU, memory node 0,
/// 4 MiB of 2 MB hugepages, a read throttle on the disk, and devices denied but for
/// `/dev/null` and `/dev/zero` (and runc's defaults, which the shim adds as runc does; so
/// `/dev/kmsg`, which the host opens, is denied).
fn kubelet_resources(disk: &str) -> serde_json::Value {
    let (major, minor) = disk.split_once(':').expect("major:minor");
    let (major, minor): (i64, i64) = (major.parse().expect("major"), minor.parse().expect("minor"));
    let mut resources = serde_json::json!({
        "cpu": { "cpus": "0", "mems": "0" },
        "blockIO": {
            "throttleReadBpsDevice": [{ "major": major, "minor": minor, "rate": 1048576 }]
        },
        "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm" }
        ]
    });
    if hugetlb_2mb() {
        resources["hugepageLimits"] = serde_json::json!([{ "pageSize": "2MB", "limit": 4194304 }]);
    }
    resources
}

#[test]
fn a_task_is_in_every_hierarchy_with_its_cpuset_hugepages_throttles_and_devices() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    assert!(
        !cgroupfs::v2(),
        "this test reads cgroup v1 files (blkio, devices): this machine is v2-only"
    );
    let (_, dev) = a_disk().expect("a block device for the throttle");
    let resources = kubelet_resources(&dev);

    // What the task sees: one CPU, /dev/zero and /dev/urandom (a default), not /dev/kmsg
    // (which the host opens).
    let host_opens = fs::File::open("/dev/kmsg").is_ok();
    assert!(
        host_opens,
        "the host cannot open /dev/kmsg: the check below would prove nothing"
    );
    let script = "grep Cpus_allowed_list /proc/self/status; \
         if (exec 3</dev/kmsg) 2>/dev/null; then echo kmsg=opened; else echo kmsg=denied; fi; \
         head -c 3 /dev/zero | wc -c; head -c 2 /dev/urandom | wc -c";
    let file = spec_file(&cd, "seen", &["sh", "-c", script], resources.clone());
    let out = run_config(&cd, "--rm", &file, "seen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ctr run: {}\n{stdout}", stderr(&out));
    assert!(stdout.contains("Cpus_allowed_list:\t0\n"), "{stdout}");
    assert!(stdout.contains("kmsg=denied"), "{stdout}");
    assert!(
        stdout.contains("\n3\n2\n"),
        "/dev/zero and /dev/urandom: {stdout}"
    );

    // The files, and every hierarchy.
    let file = spec_file(&cd, "cg", &["sleep", "1000"], resources);
    let out = run_config(&cd, "-d", &file, "cg");
    assert!(out.status.success(), "ctr run -d: {}", stderr(&out));
    let pid = cd.wait_status("cg", "RUNNING");
    let path = format!("/{}/cg", cd.namespace());
    let lines = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let hierarchies = cgroupfs::hierarchies().len();
    assert_eq!(lines.lines().count(), hierarchies, "{lines}");
    for line in lines.lines() {
        assert!(
            line.ends_with(&format!(":{path}")),
            "not at {path}: {line}\n{lines}"
        );
    }
    let read = |controller: &str, file: &str| cgroupfs::read(controller, &path, file);
    assert_eq!(read("cpuset", "cpuset.cpus").trim(), "0");
    assert_eq!(read("cpuset", "cpuset.mems").trim(), "0");
    assert_eq!(
        read("blkio", "blkio.throttle.read_bps_device").trim(),
        format!("{dev} 1048576")
    );
    let devices = read("devices", "devices.list");
    assert!(
        devices.contains("c 1:3 rwm") && devices.contains("c 1:5 rwm"),
        "{devices}"
    );
    assert!(
        !devices.contains("a *:* rwm"),
        "everything still allowed: {devices}"
    );
    if hugetlb_2mb() {
        assert_eq!(
            read("hugetlb", "hugetlb.2MB.limit_in_bytes").trim(),
            "4194304"
        );
    } else {
        eprintln!("no 2 MB hugepages here: hugepage limits not checked");
    }

    // `Update` (`shim-demo update --resources`, as newer `ctr task update --resources`):
    // another CPU, another throttle, more hugepages.
    let cpu = cgroupfs::cpus_online().saturating_sub(1).to_string();
    let (major, minor) = dev.split_once(':').expect("major:minor");
    let mut update = serde_json::json!({
        "cpu": { "cpus": cpu, "mems": "0" },
        "blockIO": {
            "throttleReadBpsDevice": [{
                "major": major.parse::<i64>().expect("major"),
                "minor": minor.parse::<i64>().expect("minor"),
                "rate": 2097152
            }]
        }
    });
    if hugetlb_2mb() {
        update["hugepageLimits"] = serde_json::json!([{ "pageSize": "2MB", "limit": 8388608 }]);
    }
    let update_file = cd.dir().join("update.json");
    fs::write(&update_file, update.to_string()).expect("write");
    let out = cd
        .shim_demo()
        .args(["update", "--id", "cg", "--resources"])
        .arg(&update_file)
        .output()
        .expect("run shim-demo update");
    assert!(out.status.success(), "shim-demo update: {}", stderr(&out));
    assert_eq!(read("cpuset", "cpuset.cpus").trim(), cpu);
    assert_eq!(proc::status_field(pid, "Cpus_allowed_list"), Some(cpu));
    assert_eq!(
        read("blkio", "blkio.throttle.read_bps_device").trim(),
        format!("{dev} 2097152")
    );
    if hugetlb_2mb() {
        assert_eq!(
            read("hugetlb", "hugetlb.2MB.limit_in_bytes").trim(),
            "8388608"
        );
    }

    // Devices: a list with a bad rule is refused before anything is written, and the
    // container keeps its devices; a good one adds /dev/kmsg for reading, as the smallest
    // change (no "deny all" in between: `devices.rs`).
    let devices_before = read("devices", "devices.list");
    let mut listed = resources_devices();
    listed.push(
        serde_json::json!({ "allow": true, "type": "c", "major": 1, "minor": 11, "access": "rwx" }),
    );
    let out = update_devices(&cd, "cg", listed);
    assert!(!out.status.success(), "a bad device rule was accepted");
    assert!(
        stderr(&out).contains("linux.resources.devices") && stderr(&out).contains("access"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        read("devices", "devices.list"),
        devices_before,
        "devices changed"
    );
    let mut listed = resources_devices();
    listed.push(
        serde_json::json!({ "allow": true, "type": "c", "major": 1, "minor": 11, "access": "r" }),
    );
    let out = update_devices(&cd, "cg", listed);
    assert!(out.status.success(), "shim-demo update: {}", stderr(&out));
    let devices_after = read("devices", "devices.list");
    assert!(devices_after.contains("c 1:11 r\n"), "{devices_after}");
    assert!(devices_after.contains("c 1:3 rwm"), "{devices_after}");
    let kept = devices_before
        .lines()
        .filter(|l| devices_after.lines().any(|a| a == *l));
    assert_eq!(
        kept.count(),
        devices_before.lines().count(),
        "{devices_after}"
    );

    // Metrics: the hugepage sizes (with their limit's usage) and block I/O.
    let metrics = cd.ctr_ok(&["task", "metrics", "--format", "json", "cg"]);
    let value: serde_json::Value = serde_json::from_str(&metrics).expect("metrics JSON");
    let sizes: Vec<&str> = value["hugetlb"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["pagesize"].as_str())
        .collect();
    if hugetlb_2mb() {
        assert!(sizes.contains(&"2MB"), "{metrics}");
    }
    assert!(
        value["blkio"].is_object(),
        "no block I/O figures: {metrics}"
    );
    cd.kill_and_remove("cg", "KILL");
    assert!(
        cgroup_dirs(&path).is_empty(),
        "left: {:?}",
        cgroup_dirs(&path)
    );
    cd.wait_shims_gone();
}

/// Block I/O figures: a task that writes and reads a file with direct I/O (past the page
/// cache, so the disk sees it) finds its bytes in `ctr task metrics`, per device.
#[test]
fn metrics_count_a_task_s_block_io() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let file = cd.dir().join("blocks");
    let disk = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| {
            // The device of the filesystem the file is on, for the per-device figures.
            let dev = std::os::unix::fs::MetadataExt::dev(&fs::metadata(cd.dir()).ok()?);
            let wanted = format!("{}:{}", libc::major(dev), libc::minor(dev));
            text.lines()
                .find(|l| l.split(' ').nth(2) == Some(wanted.as_str()))
                .and_then(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    let path = file.display();
    let script = format!(
        "dd if=/dev/zero of={path} bs=65536 count=4 oflag=direct 2>/dev/null; \
         dd if={path} of=/dev/null bs=65536 iflag=direct 2>/dev/null; exec sleep 1000"
    );
    let spec = spec_file(&cd, "io", &["sh", "-c", &script], serde_json::json!({}));
    let out = run_config(&cd, "-d", &spec, "io");
    assert!(out.status.success(), "ctr run -d: {}", stderr(&out));
    let pid = cd.wait_status("io", "RUNNING");
    integration::poll_until(
        std::time::Duration::from_secs(10),
        "the dd to finish",
        || (proc::comm(pid) == "sleep").then_some(()),
    );
    let metrics = cd.ctr_ok(&["task", "metrics", "--format", "json", "io"]);
    let value: serde_json::Value = serde_json::from_str(&metrics).expect("metrics JSON");
    let v2 = cgroupfs::v2();
    let read: u64 = if v2 {
        value["io"]["usage"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["rbytes"].as_u64().unwrap_or(0))
            .sum()
    } else {
        value["blkio"]["io_service_bytes_recursive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["op"] == "Read")
            .map(|e| e["value"].as_u64().unwrap_or(0))
            .sum()
    };
    assert!(read >= 4 * 65536, "{read} bytes read in:\n{metrics}");
    if !v2 && disk.starts_with("/dev/") {
        let devices: Vec<&str> = value["blkio"]["io_service_bytes_recursive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["device"].as_str())
            .collect();
        assert!(devices.contains(&disk.as_str()), "{disk}: {metrics}");
    }
    cd.kill_and_remove("io", "KILL");
}

/// A block I/O weight where the kernel has no proportional I/O scheduler (no
/// `blkio.weight`, no `blkio.bfq.weight`): refused, saying why, and nothing is left.
#[test]
fn a_block_io_weight_the_kernel_cannot_apply_is_refused() {
    let Some(cd) = Containerd::start() else {
        return;
    };
    let root = Path::new("/sys/fs/cgroup/blkio");
    let has_weight = root.join("blkio.weight").exists() || root.join("blkio.bfq.weight").exists();
    let file = spec_file(
        &cd,
        "weighted",
        &["true"],
        serde_json::json!({ "blockIO": { "weight": 500 } }),
    );
    let out = run_config(&cd, "--rm", &file, "weighted");
    if has_weight {
        assert!(out.status.success(), "{}", stderr(&out));
        return;
    }
    assert!(
        !out.status.success(),
        "a weight the kernel lacks was accepted"
    );
    let err = stderr(&out);
    assert!(
        err.contains("blkio.weight") && err.contains("BFQ or CFQ"),
        "not a clear refusal: {err}"
    );
    let _ = cd.ctr_output(&["container", "rm", "weighted"]);
    let path = format!("/{}/weighted", cd.namespace());
    assert!(
        cgroup_dirs(&path).is_empty(),
        "left: {:?}",
        cgroup_dirs(&path)
    );
}

/// `SAMPLE_SHIM_CGROUPS=v2`: the cgroup2 mount alone, as on a v2-only machine. The task is
/// born in its cgroup there (`clone3(CLONE_INTO_CGROUP)`), and the v1 hierarchies are
/// left alone.
#[test]
fn with_cgroup_v2_alone_a_task_is_born_in_its_cgroup() {
    let Some(cd) = Containerd::start_with_env(&[("SAMPLE_SHIM_CGROUPS", "v2")]) else {
        return;
    };
    // A spec without limits: this machine's cgroup2 has no controllers to apply them.
    let file = spec_file(
        &cd,
        "v2",
        &["sh", "-c", "sleep 1001 & exec sleep 1000"],
        serde_json::json!({}),
    );
    let out = run_config(&cd, "-d", &file, "v2");
    assert!(out.status.success(), "ctr run -d: {}", stderr(&out));
    let pid = cd.wait_status("v2", "RUNNING");
    let path = format!("/{}/v2", cd.namespace());
    let lines = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    for line in lines.lines() {
        if line.starts_with("0::") {
            assert_eq!(line, format!("0::{path}"), "{lines}");
        } else {
            assert!(!line.ends_with(&path), "a v1 hierarchy was joined: {lines}");
        }
    }
    let ps = cd.ctr_ok(&["task", "ps", "v2"]);
    assert!(ps.contains(&pid.to_string()), "{ps}");
    cd.kill_and_remove("v2", "KILL");
    assert!(
        cgroup_dirs(&path).is_empty(),
        "left: {:?}",
        cgroup_dirs(&path)
    );
}
