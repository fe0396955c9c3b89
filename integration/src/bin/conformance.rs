//! `make conformance` (`scripts/conformance.sh`): Kubernetes' CRI validation suite, critest
//! 1.36, against four runtime handlers, one after the other, in private containerds with
//! the CRI plugin and a pod network (CNI `bridge` + `portmap`):
//!
//! - `runc`: containerd's Go runc-v2 shim, the reference;
//! - `sample-oci`: our shim in the OCI mode, with the same runc;
//! - `sample-runc-v2`: our binary standing in for runc-v2 (the drop-in): runc-v2's runtime
//!   type and options, the same runc. containerd 1.7 and later run it for the handler of
//!   that name (`runtime_path`); 1.6 ignores `runtime_path`, so there the run is the handler
//!   `runc` of a second daemon whose `containerd-shim-runc-v2` is ours
//!   ([`Containerd::start_drop_in_with_cni`]);
//! - `sample`: our shim in the host mode, restricted to the specs that cannot change the
//!   host ([`HOST_SAFE`]).
//!
//! Usage: `conformance --critest PATH [--out DIR] [--handlers a,b] [--focus REGEX]` (the last
//! two for a developer's partial runs, `--handlers` taking the names above; the checks then
//! compare what ran). Writes `DIR/<name>.json` (ginkgo's report), `DIR/<name>.log` and
//! `DIR/RESULTS.md`, prints the table, and fails when `sample-oci` or the drop-in fails a
//! spec `runc` passes, or the host mode fails one of its subset.
//!
//! No registry is reachable: the test images are made offline (busybox, and a pause image
//! for the sandboxes), and the specs that pull images are skipped.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use integration::{
    image,
    outcomes::{self, Outcome},
    Containerd, DROP_IN_HANDLER, OCI_HANDLER,
};

/// The specs that pull images from a registry: none is reachable.
const PULLS: &str = "Image Manager|Image Consistency|Image Identifier Consistency";

/// The specs the host mode runs: those that cannot change the host, and whose containers'
/// commands run on a host (docs/CONFORMANCE.md says why each other spec is left out). The
/// rest need what the host mode does not give (a root filesystem, namespaces, volumes at
/// their paths, security settings), and some of them, run without isolation, change the
/// host: they set its hostname, `chmod` its root, write files in `/`, bind-mount over host
/// paths. Left out of this subset too: specs whose long-running command is `top` (the
/// host's procps `top` exits at once without a terminal, busybox's does not), and the two
/// idempotence specs containerd 1.6 itself fails under every runtime.
const HOST_SAFE: &str = "PodSandbox runtime should support basic operations|Runtime info|\
    Idempotence (RemoveContainer|RemoveImage|RemovePodSandbox|StopContainer should not return \
    an error if already stopped|StopPodSandbox should not return an error if already stopped)|\
    Container runtime should support basic operations on container runtime should support \
    (creating|preserving|removing|starting|stopping|listing)|\
    Container runtime should support log|\
    Streaming runtime should support streaming interfaces runtime should support attach";

/// How many processes run critest's specs at once.
const PARALLEL: u32 = 3;

/// One critest run: a handler of a daemon.
struct Run<'a> {
    /// What `--handlers` selects, the report's column and the files' names.
    name: &'static str,
    /// The daemon critest talks to.
    cd: &'a Containerd,
    /// The handler critest asks that daemon for (`--runtime-handler`).
    handler: &'static str,
    /// Only the specs matching this, if given (`--ginkgo.focus`).
    focus: Option<&'a str>,
}

fn main() -> Result<()> {
    let arg = |flag: &str| {
        std::env::args()
            .skip_while(|a| a != flag)
            .nth(1)
            .map(PathBuf::from)
    };
    let critest = arg("--critest").context("--critest PATH (scripts/critest.sh builds it)")?;
    let out = arg("--out").unwrap_or_else(|| PathBuf::from("target/conformance"));
    fs::create_dir_all(&out)?;
    let cd = Containerd::start_cri_with_cni()
        .context("critest needs root, containerd and the shim (see the README)")?;
    let images = out.join("test-images.yaml");
    fs::write(
        &images,
        format!(
            "defaultTestContainerImage: {0}\nwebServerTestImage: {0}\n",
            image::BUSYBOX
        ),
    )?;
    let only = std::env::args()
        .skip_while(|a| a != "--handlers")
        .nth(1)
        .map(|list| list.split(',').map(str::to_string).collect::<Vec<_>>());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let focus_arg = std::env::args().skip_while(|a| a != "--focus").nth(1);
    let focus = focus_arg.as_deref();
    // The drop-in's daemon: on 1.6 a second one, started only when its run is wanted.
    let drop_in_daemon = if wanted(DROP_IN_HANDLER) && !honours_runtime_path(&cd)? {
        Some(Containerd::start_drop_in_with_cni().context("a containerd whose runc-v2 is ours")?)
    } else {
        None
    };
    let (drop_in_cd, drop_in_handler) = match &drop_in_daemon {
        Some(second) => (second, "runc"),
        None => (&cd, DROP_IN_HANDLER),
    };
    let runs = [
        Run {
            name: "runc",
            cd: &cd,
            handler: "runc",
            focus,
        },
        Run {
            name: OCI_HANDLER,
            cd: &cd,
            handler: OCI_HANDLER,
            focus,
        },
        Run {
            name: DROP_IN_HANDLER,
            cd: drop_in_cd,
            handler: drop_in_handler,
            focus,
        },
        Run {
            name: shim_demo::cri::HANDLER,
            cd: &cd,
            handler: shim_demo::cri::HANDLER,
            focus: Some(HOST_SAFE),
        },
    ];
    let drop_in_label = if drop_in_daemon.is_some() {
        "runc-v2 → ours (drop-in), handler `runc` of a second daemon"
    } else {
        "runc-v2 → ours (drop-in), `runtime_path`"
    };
    let mut results = Vec::new();
    for run in runs.iter().filter(|run| wanted(run.name)) {
        eprintln!("== critest, {} (handler {})", run.name, run.handler);
        let started = Instant::now();
        let outcomes = critest_run(&critest, run, &out, &images)?;
        let label = if run.name == DROP_IN_HANDLER {
            drop_in_label
        } else {
            ""
        };
        results.push(outcomes::Run {
            name: run.name.to_string(),
            label: label.to_string(),
            outcomes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let report = report(&cd, &results);
    fs::write(out.join("RESULTS.md"), &report.0)?;
    print!("{}", report.0);
    if !report.1.is_empty() {
        bail!("{}", report.1.join("\n"));
    }
    Ok(())
}

/// Whether `cd` runs a handler's `runtime_path` (containerd 1.7 and later), so that its
/// [`DROP_IN_HANDLER`] is our binary; 1.6 runs runc-v2's binary from its `PATH` instead.
fn honours_runtime_path(cd: &Containerd) -> Result<bool> {
    let version = cd.server_version();
    let mut parts = version.trim_start_matches('v').split(['.', '~', '+', '-']);
    let mut next = || parts.next().and_then(|part| part.parse::<u32>().ok());
    let (major, minor) = next()
        .zip(next())
        .with_context(|| format!("no version in the daemon's answer: {version:?}"))?;
    Ok((major, minor) >= (1, 7))
}

/// Runs critest against `run`'s handler (only the specs matching its focus, if given);
/// returns each spec's outcome, from ginkgo's JSON report.
fn critest_run(
    critest: &Path,
    run: &Run,
    out: &Path,
    images: &Path,
) -> Result<BTreeMap<String, Outcome>> {
    let endpoint = format!("unix://{}", run.cd.address.display());
    let json = out.join(format!("{}.json", run.name));
    let log = fs::File::create(out.join(format!("{}.log", run.name)))?;
    let mut command = Command::new(critest);
    command
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--runtime-handler", run.handler])
        .arg("--test-images-file")
        .arg(images)
        .args(["--ginkgo.skip", PULLS, "--ginkgo.no-color"])
        .arg(format!("--ginkgo.json-report={}", json.display()))
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(focus) = run.focus {
        command.args(["--ginkgo.focus", focus]);
    }
    // Specs in parallel processes: most of a spec's time is waiting (for a container to
    // start, stop, print), so a 2-core machine runs several at once. critest runs them
    // through ginkgo's runner, which scripts/critest.sh builds beside it.
    let tools = critest.parent().unwrap_or(Path::new("."));
    let path = std::env::var("PATH").unwrap_or_default();
    command
        .arg(format!("-parallel={PARALLEL}"))
        .env("PATH", format!("{}:{path}", tools.display()));
    // critest exits 1 when a spec fails: the report says which.
    let status = command.status().context("run critest")?;
    let text = fs::read_to_string(&json)
        .with_context(|| format!("critest ({status}) wrote no report {}", json.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text)?;
    let mut outcomes = BTreeMap::new();
    for spec in report[0]["SpecReports"].as_array().into_iter().flatten() {
        if spec["LeafNodeType"] != "It" {
            continue;
        }
        let mut name: Vec<&str> = spec["ContainerHierarchyTexts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        name.push(spec["LeafNodeText"].as_str().unwrap_or_default());
        let outcome = match spec["State"].as_str() {
            Some("passed") => Outcome::Passed,
            Some("skipped" | "pending") => Outcome::Skipped,
            _ => Outcome::Failed,
        };
        outcomes.insert(name.join(" "), outcome);
    }
    Ok(outcomes)
}

/// The report (Markdown) and the problems that fail the run: ours with runc each held to
/// what containerd's runc-v2 passes, the host mode to passing its subset.
fn report(cd: &Containerd, results: &[outcomes::Run]) -> (String, Vec<String>) {
    let mut md = format!(
        "# critest 1.36 against containerd {}\n\n{}",
        cd.server_version(),
        outcomes::counts(results)
    );
    let mut problems = outcomes::regressions(results, "runc", &[OCI_HANDLER, DROP_IN_HANDLER]);
    let host = results.iter().find(|r| r.name == shim_demo::cri::HANDLER);
    for (spec, outcome) in host.into_iter().flat_map(|r| &r.outcomes) {
        if *outcome == Outcome::Failed {
            problems.push(format!("the host mode fails a spec of its subset: {spec}"));
        }
    }
    md.push_str("\n## Every spec that ran\n\n");
    md.push_str(&outcomes::every_test(results));
    (md, problems)
}
