//! `make conformance` (`scripts/conformance.sh`): Kubernetes' CRI validation suite, critest
//! 1.36, against three runtime handlers of one private containerd with the CRI plugin and a
//! pod network (CNI `bridge` + `portmap`), one handler after the other:
//!
//! - `runc`: containerd's Go runc-v2 shim, the reference;
//! - `sample-oci`: our shim in the OCI mode, with the same runc;
//! - `sample`: our shim in the host mode, restricted to the specs that cannot change the
//!   host ([`HOST_SAFE`]).
//!
//! Usage: `conformance --critest PATH [--out DIR] [--handlers a,b] [--focus REGEX]` (the last
//! two for a developer's partial runs; the checks then compare what ran). Writes `DIR/<handler>.json` (ginkgo's
//! report), `DIR/<handler>.log` and `DIR/RESULTS.md`, prints the table, and fails when
//! `sample-oci` fails a spec `runc` passes, or the host mode fails one of its subset.
//!
//! No registry is reachable: the test images are made offline (busybox, and a pause image
//! for the sandboxes), and the specs that pull images are skipped.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use integration::{image, Containerd, OCI_HANDLER};

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

/// One spec's outcome under one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
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
    let focus_arg = std::env::args().skip_while(|a| a != "--focus").nth(1);
    let handlers: Vec<(&str, Option<&str>)> = [
        ("runc", focus_arg.as_deref()),
        (OCI_HANDLER, focus_arg.as_deref()),
        (shim_demo::cri::HANDLER, Some(HOST_SAFE)),
    ]
    .into_iter()
    .filter(|(h, _)| only.as_ref().is_none_or(|o| o.iter().any(|x| x == h)))
    .collect();
    let mut results: Vec<(&str, BTreeMap<String, Outcome>, f64)> = Vec::new();
    for (handler, focus) in handlers {
        eprintln!("== critest, handler {handler}");
        let started = Instant::now();
        let outcomes = critest_run(&critest, &cd, &out, &images, handler, focus)?;
        results.push((handler, outcomes, started.elapsed().as_secs_f64()));
    }
    let report = report(&cd, &results);
    fs::write(out.join("RESULTS.md"), &report.0)?;
    print!("{}", report.0);
    if !report.1.is_empty() {
        bail!("{}", report.1.join("\n"));
    }
    Ok(())
}

/// Runs critest against `handler` (only the specs matching `focus`, if given); returns
/// each spec's outcome, from ginkgo's JSON report.
fn critest_run(
    critest: &Path,
    cd: &Containerd,
    out: &Path,
    images: &Path,
    handler: &str,
    focus: Option<&str>,
) -> Result<BTreeMap<String, Outcome>> {
    let endpoint = format!("unix://{}", cd.address.display());
    let json = out.join(format!("{handler}.json"));
    let log = fs::File::create(out.join(format!("{handler}.log")))?;
    let mut command = Command::new(critest);
    command
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--runtime-handler", handler])
        .arg("--test-images-file")
        .arg(images)
        .args(["--ginkgo.skip", PULLS, "--ginkgo.no-color"])
        .arg(format!("--ginkgo.json-report={}", json.display()))
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(focus) = focus {
        command.args(["--ginkgo.focus", focus]);
    }
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

/// The report (Markdown) and the problems that fail the run.
fn report(
    cd: &Containerd,
    results: &[(&str, BTreeMap<String, Outcome>, f64)],
) -> (String, Vec<String>) {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# critest 1.36 against containerd {}\n",
        cd.server_version()
    );
    let _ = writeln!(md, "| handler | passed | failed | skipped | time (s) |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (handler, outcomes, seconds) in results {
        let count = |o: Outcome| outcomes.values().filter(|v| **v == o).count();
        let _ = writeln!(
            md,
            "| {handler} | {} | {} | {} | {seconds:.0} |",
            count(Outcome::Passed),
            count(Outcome::Failed),
            count(Outcome::Skipped)
        );
    }
    let mut problems = Vec::new();
    let by = |name: &str| results.iter().find(|r| r.0 == name).map(|r| &r.1);
    let empty = BTreeMap::new();
    let runc = by("runc").unwrap_or(&empty);
    let oci = by(OCI_HANDLER).unwrap_or(&empty);
    let host = by(shim_demo::cri::HANDLER).unwrap_or(&empty);
    if runc.is_empty() && !oci.is_empty() {
        for (spec, outcome) in oci {
            if *outcome == Outcome::Failed {
                problems.push(format!("{OCI_HANDLER} fails: {spec}"));
            }
        }
    }
    let _ = writeln!(md, "\n## Every spec that ran\n");
    let _ = writeln!(
        md,
        "| spec | runc | {OCI_HANDLER} | {} |",
        shim_demo::cri::HANDLER
    );
    let _ = writeln!(md, "|---|---|---|---|");
    let word = |o: Option<&Outcome>| match o {
        Some(Outcome::Passed) => "pass",
        Some(Outcome::Failed) => "FAIL",
        Some(Outcome::Skipped) | None => "-",
    };
    for (spec, outcome) in runc {
        if *outcome == Outcome::Skipped && oci.get(spec) == Some(&Outcome::Skipped) {
            continue;
        }
        let _ = writeln!(
            md,
            "| {spec} | {} | {} | {} |",
            word(Some(outcome)),
            word(oci.get(spec)),
            word(host.get(spec))
        );
        if *outcome == Outcome::Passed && !oci.is_empty() && oci.get(spec) != Some(&Outcome::Passed)
        {
            problems.push(format!("{OCI_HANDLER} fails a spec runc passes: {spec}"));
        }
    }
    for (spec, outcome) in host {
        if *outcome == Outcome::Failed {
            problems.push(format!("the host mode fails a spec of its subset: {spec}"));
        }
    }
    (md, problems)
}
