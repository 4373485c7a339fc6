//! `lookout exporter`: probes targets the way blackbox_exporter does, plus continuous targets
//! and heartbeats. Flags are spelled the Prometheus way (`--config.file`, `--web.listen-address`).

use std::path::PathBuf;
use std::process::ExitCode;

use lookout_exporter::config::{Config, parse_size};
use lookout_exporter::limits::{self, Limits};
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
    /// Largest configuration file read, at start-up and on every reload (SIGHUP,
    /// `/-/reload`): bytes, or a number with a base-2 unit (`512KiB`, `4MiB`, `1MB`).
    #[arg(
        long = "config.max-file-size",
        value_name = "SIZE",
        default_value = "4MiB",
        value_parser = config_file_size
    )]
    config_max_file_size: u64,
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
    /// Probe only this share of the continuous targets (static and discovered): `i/N`
    /// probes the targets whose name hashes to i modulo N, so N exporters with the same
    /// configuration and shards 0/N..N-1/N probe every target exactly once.
    #[arg(long = "targets.shard", value_name = "i/N")]
    targets_shard: Option<lookout_exporter::discovered::Shard>,
    /// Most redirects an HTTP probe follows; one more fails it with `too_many_redirects`
    /// (`0` fails on the first redirect; a module's `follow_redirects: false` follows none).
    #[arg(
        long = "probe.max-redirects",
        value_name = "N",
        default_value_t = limits::DEFAULT_MAX_REDIRECTS
    )]
    probe_max_redirects: u32,
    /// Largest HTTP response head (status line and headers; the header list over HTTP/2) a
    /// probe accepts, else `headers_too_large`: bytes, or a number with a base-2 unit
    /// (`64KiB`, `1MB`); from 8KiB to 4GiB-1.
    #[arg(
        long = "probe.max-response-header-bytes",
        value_name = "SIZE",
        default_value = "64KiB",
        value_parser = response_header_bytes
    )]
    probe_max_response_header_bytes: usize,
    /// Most HTTP/1 response header fields a probe accepts, else `headers_too_large`; from 1
    /// to 10000.
    #[arg(
        long = "probe.max-response-header-fields",
        value_name = "N",
        default_value_t = limits::DEFAULT_MAX_RESPONSE_HEADER_FIELDS,
        value_parser = response_header_fields
    )]
    probe_max_response_header_fields: usize,
    /// Largest response body kept in memory for a module's `fail_if_body_*` regexps and CEL
    /// expressions when the module sets no `body_size_limit`, else `body_too_large` (other
    /// bodies are counted, not kept, and unlimited as in blackbox_exporter): bytes or a
    /// base-2 unit (`10MiB`).
    #[arg(
        long = "probe.max-regexp-body-bytes",
        value_name = "SIZE",
        default_value = "10MiB",
        value_parser = regexp_body_bytes
    )]
    probe_max_regexp_body_bytes: u64,
    #[command(flatten)]
    web: super::WebArgs,
}

/// Runs the exporter until Ctrl-C or SIGTERM, or checks its configuration.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limits = args.limits();
    if args.config_check {
        return Ok(check(&args.config_file, &limits));
    }
    let options = RunOptions {
        config_file: args.config_file,
        listen_address: args.listen_address,
        timeout_offset: args.timeout_offset,
        max_concurrent_probe_requests: args.max_concurrent_probes,
        target_probe_concurrency: args.probe_concurrency,
        shard: args.targets_shard,
        discovery: Default::default(),
        limits,
        web: args.web.options(),
    };
    let runtime = super::runtime()?;
    runtime.block_on(lookout_exporter::run(options, super::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

impl Args {
    /// The limits these flags set (each already checked by its value parser).
    fn limits(&self) -> Limits {
        Limits {
            max_redirects: self.probe_max_redirects,
            max_response_header_bytes: self.probe_max_response_header_bytes,
            max_response_header_fields: self.probe_max_response_header_fields,
            max_regexp_body_bytes: self.probe_max_regexp_body_bytes,
            max_config_file_bytes: self.config_max_file_size,
        }
    }
}

/// `--config.max-file-size`: a size with an optional base-2 unit, at least 1 byte.
fn config_file_size(text: &str) -> Result<u64, String> {
    limits::check_config_file_bytes(parse_size(text)?).map_err(|e| e.why)
}

/// `--probe.max-response-header-bytes`: a size with an optional base-2 unit, in the range
/// hyper and HTTP/2 can take.
fn response_header_bytes(text: &str) -> Result<usize, String> {
    let bytes = parse_size(text)?;
    let bytes = usize::try_from(bytes).map_err(|_| format!("size {text:?} is too large"))?;
    limits::check_response_header_bytes(bytes).map_err(|e| e.why)
}

/// `--probe.max-regexp-body-bytes`: a size with an optional base-2 unit, at least 1 byte.
fn regexp_body_bytes(text: &str) -> Result<u64, String> {
    limits::check_regexp_body_bytes(parse_size(text)?).map_err(|e| e.why)
}

/// `--probe.max-response-header-fields`: a count in the range the prober allows.
fn response_header_fields(text: &str) -> Result<usize, String> {
    let fields: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of header fields"))?;
    limits::check_response_header_fields(fields).map_err(|e| e.why)
}

fn check(path: &std::path::Path, limits: &Limits) -> ExitCode {
    match check_file(path, limits) {
        Ok(summary) => {
            println!("{}: OK ({summary})", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration file as the exporter does at start: a summary of what it
/// holds, or the error (naming file, line and column).
pub(super) fn check_file(path: &std::path::Path, limits: &Limits) -> Result<String, String> {
    let config =
        Config::load_limited(path, limits.max_config_file_bytes).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} modules, {} targets, {} heartbeats",
        config.modules.len(),
        config.targets.len(),
        config.heartbeats.len()
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Result<Limits, String> {
        Cli::try_parse_from(std::iter::once("exporter").chain(flags.iter().copied()))
            .map(|cli| cli.args.limits())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn limit_flags_default_to_the_built_in_limits() {
        assert_eq!(parse(&[]), Ok(Limits::default()));
    }

    #[test]
    fn limit_flags_take_sizes_with_units_and_plain_numbers() {
        let l = parse(&[
            "--probe.max-redirects=3",
            "--probe.max-response-header-bytes=1MB",
            "--probe.max-response-header-fields",
            "20",
            "--config.max-file-size=512KiB",
            "--probe.max-regexp-body-bytes=1MiB",
        ])
        .expect("valid flags");
        assert_eq!(
            l,
            Limits {
                max_redirects: 3,
                max_response_header_bytes: 1 << 20,
                max_response_header_fields: 20,
                max_regexp_body_bytes: 1 << 20,
                max_config_file_bytes: 512 << 10,
            }
        );
        let l = parse(&[
            "--probe.max-response-header-bytes=16384",
            "--config.max-file-size=100",
            "--probe.max-redirects=0",
        ])
        .expect("plain numbers");
        assert_eq!(l.max_response_header_bytes, 16384);
        assert_eq!(l.max_config_file_bytes, 100);
        assert_eq!(l.max_redirects, 0);
    }

    #[test]
    fn bad_limit_values_are_refused_naming_the_flag() {
        for (flag, expected) in [
            (
                "--probe.max-response-header-bytes=4KiB",
                "must be between 8192 bytes",
            ),
            (
                "--probe.max-response-header-bytes=8GiB",
                "must be between 8192 bytes",
            ),
            (
                "--probe.max-response-header-bytes=lots",
                "invalid size \"lots\"",
            ),
            (
                "--probe.max-response-header-fields=0",
                "must be between 1 and 10000",
            ),
            (
                "--probe.max-response-header-fields=many",
                "not a whole number",
            ),
            ("--config.max-file-size=0", "must be at least 1 byte"),
            ("--config.max-file-size=4XB", "unknown unit"),
            ("--probe.max-redirects=-1", "--probe.max-redirects"),
        ] {
            let e = parse(&[flag]).expect_err(flag);
            let name = flag.split('=').next().unwrap_or(flag);
            assert!(e.contains(name), "{flag}: {e}");
            assert!(e.contains(expected), "{flag}: {e}");
        }
    }
}
