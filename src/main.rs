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
    cli::limit_malloc_arenas(&cli.command);
    // Parsing and evaluating PromQL recurses as deep as the expression (up to
    // `--query.max-depth`): run every sub-command on a thread with the stack that needs
    // (`rules check` and `rules test` parse and evaluate here).
    let run = std::thread::Builder::new()
        .name("lookout-main".into())
        .stack_size(lookout_promql::engine::depth::EVAL_STACK_BYTES)
        .spawn(move || cli::run(cli.command));
    let result = match run {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the main thread panicked"))),
        Err(e) => Err(anyhow::anyhow!("cannot start the main thread: {e}")),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
