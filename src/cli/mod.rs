//! Sub-commands. Each module parses its own flags and calls a library crate's entry point.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

pub mod evaluator;
pub mod exporter;
pub mod promqltest;
pub mod rules;
pub mod up;

/// All sub-commands of `lookout`.
#[derive(Subcommand)]
pub enum Command {
    /// Probe targets (blackbox_exporter compatible) and serve the results as metrics.
    Exporter(exporter::Args),
    /// Run Prometheus's PromQL test scripts (`*.test`) against Lookout's PromQL engine.
    Promqltest(promqltest::Args),
    /// Evaluate Prometheus alerting and recording rules and send alerts.
    Evaluator(Box<evaluator::Args>),
    /// Check Prometheus rule files (`lookout rules check FILE...`).
    Rules(rules::Args),
    /// Exporter and evaluator in one process on loopback, with the built-in example
    /// configuration and the shipped rules; prints the URLs to open.
    Up(up::Args),
}

/// How logs are written.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` for the whole process.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs a sub-command and returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Exporter(args) => exporter::run(args),
        Command::Promqltest(args) => promqltest::run(args),
        Command::Evaluator(args) => evaluator::run(*args),
        Command::Rules(args) => rules::run(args),
        Command::Up(args) => up::run(args),
    }
}
