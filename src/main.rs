//! `lookout`: one binary, one sub-command per component.

mod cli;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lookout",
    version,
    about = "Probes targets and fires Prometheus-style alerts"
)]
struct Cli {
    /// Log format: `logfmt`-like human text or `json`.
    #[arg(long = "log.format", global = true, default_value = "human")]
    log_format: cli::LogFormat,
    /// Log level filter (tracing's env-filter syntax), e.g. `info` or `lookout_exporter=debug`.
    #[arg(long = "log.level", global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: cli::Command,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format, &cli.log_level);
    match cli::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
