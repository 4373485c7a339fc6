//! `lookout rules check FILE...`: validates rule files like `promtool check rules`.

use std::process::ExitCode;

use lookout_evaluator::rules::check::check_files;

/// Flags of `lookout rules`.
#[derive(clap::Args)]
pub struct Args {
    /// What to do with the rule files.
    #[command(subcommand)]
    pub command: RulesCommand,
}

/// `lookout rules` sub-commands.
#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Check rule files for errors, as `promtool check rules` does (exit 1 on any error).
    Check {
        /// Largest rule file read (base-2 units: 10MiB, 512KB = 512 KiB, or bytes).
        #[arg(long = "rules.max-file-size", value_name = "SIZE", default_value = "10MiB", value_parser = super::evaluator::parse_size)]
        max_file_size: u64,
        /// Rule files to check.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Run `promtool test rules` unit-test files (exit 1 when a test fails).
    Test {
        /// Only run test groups whose name matches one of these regular expressions.
        #[arg(long = "run")]
        run: Vec<String>,
        /// Ignore unknown fields in rule files.
        #[arg(long = "ignore-unknown-fields")]
        ignore_unknown_fields: bool,
        /// Print per-group timings and a dump of all series to stderr.
        #[arg(long)]
        debug: bool,
        /// Largest test file or rule file read (base-2 units: 10MiB, 512KB = 512 KiB, or
        /// bytes).
        #[arg(long = "rules.max-file-size", value_name = "SIZE", default_value = "10MiB", value_parser = super::evaluator::parse_size)]
        max_file_size: u64,
        #[command(flatten)]
        windows: super::WindowArgs,
        /// Unit-test files.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

/// Runs `lookout rules ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        RulesCommand::Test {
            run,
            ignore_unknown_fields,
            debug,
            max_file_size,
            windows,
            files,
        } => {
            let opts = lookout_evaluator::unittest::TestOptions {
                run,
                ignore_unknown_fields,
                debug,
                max_file_bytes: max_file_size,
                windows: windows.semantics(),
            };
            let summary = lookout_evaluator::unittest::run_files(
                &files,
                &opts,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            )?;
            Ok(ExitCode::from(summary.exit_code()))
        }
        RulesCommand::Check {
            max_file_size,
            files,
        } => {
            let ok = check_files(
                &files,
                max_file_size,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
