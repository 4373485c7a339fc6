//! `lookout promqltest FILE...`: runs Prometheus's PromQL test scripts against Lookout's
//! engine and prints per-file results and a final `N passed, N failed, N skipped` line.

use std::path::PathBuf;
use std::process::ExitCode;

use lookout_promql::promqltest::{Status, harness_engine_options, run_file_with};

/// Flags of `lookout promqltest`.
#[derive(clap::Args)]
pub struct Args {
    /// Test scripts in Prometheus's `promqltest` format (`*.test`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also list every skipped eval with its reason.
    #[arg(long)]
    pub show_skipped: bool,
    #[command(flatten)]
    pub windows: super::WindowArgs,
}

/// Runs the scripts; exit code 1 when anything failed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let opts = lookout_promql::engine::EngineOptions {
        windows: args.windows.semantics(),
        ..harness_engine_options()
    };
    for file in &args.files {
        let name = file.display();
        let report = match run_file_with(file, opts.clone()) {
            Ok(r) => r,
            Err(e) => {
                println!("{e}");
                failed += 1;
                continue;
            }
        };
        for e in &report.errors {
            println!("{name}: {e}");
        }
        for e in &report.evals {
            match &e.status {
                Status::Passed => {}
                Status::Failed(msg) => {
                    println!("FAIL {name}:{}: {}\n    {msg}", e.line, e.query);
                }
                Status::Skipped(reason) if args.show_skipped => {
                    println!("SKIP {name}:{}: {}\n    {reason}", e.line, e.query);
                }
                Status::Skipped(_) => {}
            }
        }
        println!(
            "{name}: {} passed, {} failed, {} skipped",
            report.passed(),
            report.failed(),
            report.skipped()
        );
        passed += report.passed();
        failed += report.failed();
        skipped += report.skipped();
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
