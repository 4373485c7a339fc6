//! Runs Prometheus's PromQL test scripts and compares the failures with the checked-in
//! list of known failures (`testdata/known_failures.txt`): a new failure or a newly
//! passing eval fails the test, so the list always says exactly what does not work.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lookout_promql::engine::EngineOptions;
use lookout_promql::promqltest::{Status, harness_engine_options, run_file_with};

/// The scripts: `../shared/conformance/promqltest` beside the checkout when present, else
/// the copy in `testdata/`.
fn script_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../../shared/conformance/promqltest");
    if shared.is_dir() {
        shared
    } else {
        manifest.join("testdata")
    }
}

#[test]
fn prometheus_test_scripts() {
    run_scripts(harness_engine_options());
}

/// The scripts again with every range function's series split across three threads
/// (two or more series suffice; on the shipped defaults only about 20,000 windows do):
/// the same evals pass and fail.
#[test]
fn prometheus_test_scripts_with_series_split_across_threads() {
    run_scripts(EngineOptions {
        split_series: Some(3),
        ..harness_engine_options()
    });
}

fn run_scripts(opts: EngineOptions) {
    let dir = script_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("script directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        21,
        "expected the 21 conformance scripts in {}",
        dir.display()
    );

    let known_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/known_failures.txt");
    let known: BTreeSet<String> = std::fs::read_to_string(&known_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();

    let mut failing = BTreeSet::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let report = run_file_with(f, opts.clone()).expect("script runs");
        assert!(report.errors.is_empty(), "{name}: {:?}", report.errors);
        let (mut p, mut fl, mut s) = (0, 0, 0);
        for e in &report.evals {
            match &e.status {
                Status::Passed => p += 1,
                Status::Failed(msg) => {
                    fl += 1;
                    let key = format!("{name}:{}", e.line);
                    if !known.contains(&key) {
                        println!("NEW FAILURE {key}: {}\n    {msg}", e.query);
                    }
                    failing.insert(key);
                }
                Status::Skipped(reason) => {
                    s += 1;
                    println!("SKIPPED {name}:{} {reason}", e.line);
                }
            }
        }
        println!("{name}: {p} passed, {fl} failed, {s} skipped");
        passed += p;
        failed += fl;
        skipped += s;
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    // Every eval runs: the harness skips none since native histograms are stored.
    assert_eq!(skipped, 0, "skipped evals (listed above)");
    let newly_failing: Vec<_> = failing.difference(&known).collect();
    let newly_passing: Vec<_> = known.difference(&failing).collect();
    assert!(
        newly_failing.is_empty() && newly_passing.is_empty(),
        "evals failing but not in known_failures.txt: {newly_failing:?}; \
         evals in known_failures.txt that now pass (remove them): {newly_passing:?}"
    );
}
