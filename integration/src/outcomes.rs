//! The outcomes of a conformance suite run under several handlers, and what `make
//! conformance` reports of them: a table of counts, the table of every test, and the tests
//! the reference passes that ours do not (what fails the run).

use std::{collections::BTreeMap, fmt::Write as _};

/// One test's outcome under one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Passed,
    /// Failed (or did not finish in its time).
    Failed,
    /// Skipped, by the suite or by us (excluded).
    Skipped,
}

/// A suite's run under one handler.
pub struct Run {
    /// The handler's name, the tables' column.
    pub name: String,
    /// What the tables say of it (how it ran), beside its name.
    pub label: String,
    /// Each test's outcome, by name.
    pub outcomes: BTreeMap<String, Outcome>,
    /// How long the run took, in seconds.
    pub seconds: f64,
}

impl Run {
    /// How many tests had `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.outcomes.values().filter(|o| **o == outcome).count()
    }
}

/// The table of counts, one row per run (Markdown).
pub fn counts(runs: &[Run]) -> String {
    let mut md = String::from("| handler | passed | failed | skipped | time (s) |\n");
    md.push_str("|---|---:|---:|---:|---:|\n");
    for run in runs {
        let label = if run.label.is_empty() {
            run.name.clone()
        } else {
            format!("{}: {}", run.name, run.label)
        };
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {:.0} |",
            run.count(Outcome::Passed),
            run.count(Outcome::Failed),
            run.count(Outcome::Skipped),
            run.seconds
        );
    }
    md
}

/// The table of every test some run did not skip, a column per run (Markdown).
pub fn every_test(runs: &[Run]) -> String {
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let mut md = format!("| test | {} |\n", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(names.len()));
    let word = |o: Option<&Outcome>| match o {
        Some(Outcome::Passed) => "pass",
        Some(Outcome::Failed) => "FAIL",
        Some(Outcome::Skipped) | None => "-",
    };
    let tests: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.outcomes.keys()).collect();
    for test in tests {
        let outcomes: Vec<Option<&Outcome>> = runs.iter().map(|r| r.outcomes.get(test)).collect();
        if outcomes
            .iter()
            .all(|o| matches!(o, Some(Outcome::Skipped) | None))
        {
            continue;
        }
        let words: Vec<&str> = outcomes.into_iter().map(word).collect();
        let _ = writeln!(md, "| {test} | {} |", words.join(" | "));
    }
    md
}

/// The tests run `reference` passes that each of `ours` does not; when `reference` did not
/// run (a partial run), every test each of `ours` failed.
pub fn regressions(runs: &[Run], reference: &str, ours: &[&str]) -> Vec<String> {
    let by = |name: &str| runs.iter().find(|r| r.name == name);
    let mut problems = Vec::new();
    for name in ours {
        let Some(run) = by(name) else { continue };
        match by(reference) {
            None => problems.extend(
                run.outcomes
                    .iter()
                    .filter(|(_, o)| **o == Outcome::Failed)
                    .map(|(test, _)| format!("{name} fails: {test}")),
            ),
            Some(reference_run) => {
                for (test, outcome) in &reference_run.outcomes {
                    if *outcome == Outcome::Passed
                        && run.outcomes.get(test) != Some(&Outcome::Passed)
                    {
                        problems.push(format!("{name} fails a test {reference} passes: {test}"));
                    }
                }
            }
        }
    }
    problems
}
