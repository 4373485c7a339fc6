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
        /// Rule files to check.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

/// Runs `lookout rules ...`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        RulesCommand::Check { files } => {
            let ok = check_files(&files, &mut std::io::stdout(), &mut std::io::stderr());
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
