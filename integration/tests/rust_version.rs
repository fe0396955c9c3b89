//! The workspace's `rust-version` is a promise: "this toolchain or newer builds it". It is
//! only as true as the oldest toolchain every locked dependency accepts, and dependencies
//! raise theirs in minor releases, so a `cargo update` can quietly break it.
//!
//! This test asks cargo itself: `cargo metadata` on the workspace, with `Cargo.lock` as it
//! is, for the platform the tests run on. Its resolve holds every package the workspace
//! builds here, dev-dependencies included (the tests must build too). The highest
//! `rust-version` among them is the true minimum, and each member must declare exactly that:
//! lower would promise a toolchain that cannot build us, higher would turn away one that
//! can. Needs nothing but the cargo running the tests: no containerd, no other toolchain.

use std::{path::Path, process::Command};

use serde_json::Value;

#[test]
fn declared_rust_version_is_the_locked_dependencies_minimum() {
    let metadata = cargo_metadata();
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|id| id.as_str().expect("member id"))
        .collect();
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes (was --no-deps passed?)")
        .iter()
        .map(|node| node["id"].as_str().expect("node id"))
        .collect();

    // The highest rust-version among the resolved dependencies, and who sets it.
    let mut minimum: Option<(RustVersion, Vec<String>)> = None;
    let mut declared = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let id = package["id"].as_str().expect("package id");
        let field = |key: &str| package[key].as_str().unwrap_or_default();
        let name = format!("{} {}", field("name"), field("version"));
        let version = package["rust_version"].as_str().map(RustVersion::parse);
        if members.contains(&id) {
            declared.push((name, version));
            continue;
        }
        let Some(version) = version.filter(|_| resolved.contains(&id)) else {
            continue;
        };
        match &mut minimum {
            Some((max, setters)) if version == *max => setters.push(name),
            Some((max, _)) if version < *max => {}
            _ => minimum = Some((version, vec![name])),
        }
    }
    let (minimum, setters) = minimum.expect("no resolved dependency declares a rust-version");
    println!("true minimum: {minimum}, set by {}", setters.join(", "));

    for (member, version) in declared {
        let version = version.unwrap_or_else(|| {
            panic!("{member} declares no rust-version; the dependencies need {minimum}")
        });
        assert!(
            version == minimum,
            "{member} declares rust-version {version}, but the locked dependencies need \
             exactly {minimum} (set by {}): make `rust-version` in the root Cargo.toml's \
             [workspace.package] say \"{minimum}\"",
            setters.join(", ")
        );
    }
}

/// `cargo metadata` of this workspace, for the host platform, as `Cargo.lock` pins it.
fn cargo_metadata() -> Value {
    // Cargo tells the tests it runs which cargo it is.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let host = run(Command::new(&cargo).arg("-vV"))
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .expect("a `host:` line in `cargo -vV`");
    let json = run(Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &host])
        .arg("--manifest-path")
        .arg(&manifest));
    serde_json::from_str(&json).expect("cargo metadata prints JSON")
}

/// Runs `command`, asserts it succeeded, returns its stdout.
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A `rust-version` (`1.89` or `1.88.0`), compared number by number (an array compares
/// element by element): 1.9 < 1.89 < 1.100, and 1.89 equals 1.89.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RustVersion([u64; 3]);

impl RustVersion {
    fn parse(text: &str) -> RustVersion {
        let mut parts = [0; 3];
        let mut count = 0;
        for part in text.split('.') {
            assert!(count < 3, "rust-version {text:?} has more than three parts");
            parts[count] = part
                .parse()
                .unwrap_or_else(|_| panic!("rust-version {text:?} is not numeric"));
            count += 1;
        }
        assert!(count >= 2, "rust-version {text:?} needs major.minor");
        RustVersion(parts)
    }
}

impl std::fmt::Display for RustVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [major, minor, patch] = self.0;
        write!(f, "{major}.{minor}")?;
        if patch > 0 {
            write!(f, ".{patch}")?;
        }
        Ok(())
    }
}

#[test]
fn rust_versions_compare_as_numbers() {
    let v = RustVersion::parse;
    assert!(v("1.89") > v("1.9"));
    assert!(v("1.100") > v("1.89"));
    assert!(v("1.89") == v("1.89.0"));
    assert!(v("1.89.1") > v("1.89"));
    assert_eq!(v("1.88.0").to_string(), "1.88");
}
