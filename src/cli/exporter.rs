//! `lookout exporter`: probes targets the way blackbox_exporter does, plus continuous targets
//! and heartbeats. Flags are spelled the Prometheus way (`--config.file`, `--web.listen-address`).

use std::path::PathBuf;
use std::process::ExitCode;

use lookout_exporter::config::Config;
use lookout_exporter::{DEFAULT_LISTEN_ADDRESS, RunOptions};

/// Flags of `lookout exporter`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration file: blackbox_exporter `modules:` plus `targets:` and `heartbeats:`.
    #[arg(
        long = "config.file",
        value_name = "FILE",
        default_value = "exporter.yml"
    )]
    config_file: PathBuf,
    /// Validate the configuration file, print the result and exit (0 valid, 1 not).
    #[arg(long = "config.check")]
    config_check: bool,
    /// Address to listen on; `:9115` listens on all IPv4 interfaces.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = DEFAULT_LISTEN_ADDRESS)]
    listen_address: String,
    /// Seconds subtracted from Prometheus' scrape timeout to get the `/probe` timeout.
    #[arg(long = "timeout-offset", value_name = "SECONDS", default_value_t = 0.5)]
    timeout_offset: f64,
    /// Most `/probe` requests probing at once; more are answered 503.
    #[arg(
        long = "web.max-concurrent-probes",
        value_name = "N",
        default_value_t = 1000
    )]
    max_concurrent_probes: usize,
    /// Most continuous-target probes running at once.
    #[arg(long = "probe.concurrency", value_name = "N", default_value_t = 256)]
    probe_concurrency: usize,
    #[command(flatten)]
    web: super::WebArgs,
}

/// Runs the exporter until Ctrl-C or SIGTERM, or checks its configuration.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.config_check {
        return Ok(check(&args.config_file));
    }
    let options = RunOptions {
        config_file: args.config_file,
        listen_address: args.listen_address,
        timeout_offset: args.timeout_offset,
        max_concurrent_probe_requests: args.max_concurrent_probes,
        target_probe_concurrency: args.probe_concurrency,
        web: args.web.options(),
    };
    let runtime = super::runtime()?;
    runtime.block_on(lookout_exporter::run(options, super::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: OK ({} modules, {} targets, {} heartbeats)",
                path.display(),
                config.modules.len(),
                config.targets.len(),
                config.heartbeats.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
