//! `lookout evaluator`: loads Prometheus rule files and fires alerts, evaluating on its own
//! scraped storage (embedded mode, the default) or on a Prometheus-API server
//! (`--datasource.url`). Flags are spelled the Prometheus way.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lookout_evaluator::EvaluatorOptions;
use lookout_evaluator::remote::RemoteConfig;
use lookout_evaluator::remote_write::RemoteWriteConfig;
use lookout_evaluator::scrape_config::{Authorization, BasicAuth, ByteSize, HttpClientConfig};
use lookout_promql::duration::parse_duration;

/// Flags of `lookout evaluator`.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file in Prometheus's schema (`global`, `rule_files`, `scrape_configs`,
    /// `alerting`).
    #[arg(
        long = "config.file",
        value_name = "FILE",
        default_value = "evaluator.yml"
    )]
    config_file: PathBuf,
    /// Validate the configuration file and the rule files it names (and `--rules.file`),
    /// print the result and exit (0 valid, 1 not); nothing is started.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Address of the web server (API, /metrics, /-/reload).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "0.0.0.0:9095"
    )]
    listen_address: String,
    /// URL under which the evaluator is reached (generatorURL of alerts, $externalURL).
    #[arg(long = "web.external-url", value_name = "URL")]
    external_url: Option<String>,
    /// More rule files (globs), added to the configuration's `rule_files`.
    #[arg(long = "rules.file", value_name = "GLOB")]
    rule_files: Vec<String>,
    /// File keeping `for` timers across restarts (embedded mode, or remote mode without
    /// remote write). Written atomically.
    #[arg(
        long = "rules.state-file",
        value_name = "FILE",
        default_value = "data/alerts-state.json"
    )]
    state_file: PathBuf,
    /// Minimum time between two sends of a firing alert.
    #[arg(long = "rules.alert.resend-delay", value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    resend_delay: Duration,
    /// Maximum downtime for which `for` state is restored.
    #[arg(long = "rules.alert.for-outage-tolerance", value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    outage_tolerance: Duration,
    /// Minimum time left to wait after a restart before an alert with a long `for` fires.
    #[arg(long = "rules.alert.for-grace-period", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    for_grace_period: Duration,
    /// Alerts kept waiting for delivery; more are dropped (and counted).
    #[arg(
        long = "alertmanager.notification-queue-capacity",
        value_name = "N",
        default_value_t = 10_000
    )]
    queue_capacity: usize,
    #[command(flatten)]
    retention: super::RetentionArgs,
    /// Embedded mode: data directory (relative to the working directory, as Prometheus's
    /// default); its write-ahead log (Prometheus's format, in DIR/wal) keeps scraped
    /// samples and rule outputs across restarts, and its lock file keeps a second
    /// evaluator out. An empty string (`--storage.tsdb.path=`) keeps them in memory only.
    #[arg(
        long = "storage.tsdb.path",
        value_name = "DIR",
        default_value = "data/",
        value_parser = super::any_path
    )]
    storage_path: PathBuf,
    /// Most samples one query (rule or API) may load into memory; a larger one fails with
    /// "query processing would load too many samples into memory".
    #[arg(
        long = "query.max-samples",
        value_name = "N",
        default_value_t = 50_000_000
    )]
    query_max_samples: usize,
    /// Longest run of one query (rule or API); a longer one fails with "query timed out".
    #[arg(long = "query.timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    query_timeout: Duration,
    /// Most API queries (/api/v1/query, /api/v1/query_range) evaluated at once; more wait
    /// for a slot within their timeout. At least 1. A query over many series may use a
    /// thread per core while it runs.
    #[arg(long = "query.max-concurrency", value_name = "N", default_value = "20", value_parser = parse_concurrency)]
    query_max_concurrency: usize,
    /// Deepest expression tree a query or rule may parse to (operators in one chain count
    /// one level each, as do brackets, calls and unary signs); a deeper one is refused
    /// before parsing with "expression nested deeper than the N-level limit". 1 to 256:
    /// evaluation recurses as deep, and the threads' stacks are sized for 256.
    #[arg(long = "query.max-depth", value_name = "N", default_value = "256", value_parser = parse_max_depth)]
    query_max_depth: usize,
    #[command(flatten)]
    windows: super::WindowArgs,
    /// Embedded mode: most series kept in memory. A sample that would create one more
    /// series is refused (existing series keep taking samples) and counted in
    /// lookout_evaluator_limit_hits_total{limit="storage_max_series"}. 0 is unlimited.
    #[arg(
        long = "storage.max-series",
        value_name = "N",
        default_value_t = lookout_evaluator::limits::DEFAULT_STORAGE_MAX_SERIES
    )]
    storage_max_series: usize,
    /// Largest configuration file read (base-2 units: 1MiB, 512KB = 512 KiB, or bytes); a
    /// larger one is refused at start and on reload.
    #[arg(long = "config.max-file-size", value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    config_max_file_size: u64,
    /// Largest rule file read (base-2 units: 10MiB, 512KB = 512 KiB, or bytes); a larger
    /// one is refused at start, and a reload with one keeps the running rules.
    #[arg(long = "rules.max-file-size", value_name = "SIZE", default_value = "10MiB", value_parser = parse_size)]
    rules_max_file_size: u64,
    /// Longest expansion of one alert label or annotation template (base-2 units: 64KiB,
    /// or bytes); expanding stops there and the text becomes
    /// "<error expanding template: ...>".
    #[arg(long = "rules.template.max-output-bytes", value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    template_max_output_bytes: u64,
    /// Time the label and annotation templates of one rule evaluation may take together;
    /// past it, expanding stops and the texts become "<error expanding template: ...>"
    /// (0: no limit).
    #[arg(long = "rules.template.timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    template_timeout: std::time::Duration,
    /// Remote mode: base URL of a Prometheus-API server (Prometheus, Thanos, Mimir,
    /// VictoriaMetrics) to evaluate rules on, e.g. `http://prometheus:9090`.
    #[arg(long = "datasource.url", value_name = "URL")]
    datasource_url: Option<String>,
    /// Basic-auth user for the datasource.
    #[arg(long = "datasource.basic-auth.username", value_name = "USER")]
    datasource_user: Option<String>,
    /// File holding the basic-auth password for the datasource.
    #[arg(long = "datasource.basic-auth.password-file", value_name = "FILE")]
    datasource_password_file: Option<PathBuf>,
    /// File holding a bearer token for the datasource.
    #[arg(long = "datasource.bearer-token-file", value_name = "FILE")]
    datasource_bearer_token_file: Option<PathBuf>,
    /// Per-query time limit in remote mode.
    #[arg(long = "datasource.timeout", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    datasource_timeout: Duration,
    /// Remote mode: write rule outputs (recorded series, ALERTS, ALERTS_FOR_STATE) to this
    /// remote-write URL, so later rules see them and `for` state is restored from there.
    #[arg(long = "remote-write.url", value_name = "URL")]
    remote_write_url: Option<String>,
    #[command(flatten)]
    features: super::FeatureArgs,
    #[command(flatten)]
    web: super::WebArgs,
}

/// A size flag: `ByteSize` syntax (Go's base-2 units: `10MiB`, `512KB` = 512 KiB, plain
/// bytes), greater than 0.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let size = ByteSize::parse(s)
        .map_err(|e| format!("{e}; expected a size such as 10MiB, 512KiB or 1048576"))?;
    if size.0 == 0 {
        return Err("must be greater than 0".to_string());
    }
    Ok(size.0)
}

/// `--query.max-concurrency`: an integer of at least 1.
impl Args {
    /// Remote mode: rules are evaluated by the `--datasource.url` server, not here.
    pub fn is_remote(&self) -> bool {
        self.datasource_url.is_some()
    }
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if n == 0 {
        return Err("must be at least 1".to_string());
    }
    Ok(n)
}

/// `--query.max-depth`: an integer from 1 to the default (the most the stacks hold).
fn parse_max_depth(s: &str) -> Result<usize, String> {
    let most = lookout_promql::engine::depth::DEFAULT_MAX_DEPTH;
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if n == 0 || n > most {
        return Err(format!("must be from 1 to {most}"));
    }
    Ok(n)
}

fn http_config(args: &Args) -> HttpClientConfig {
    HttpClientConfig {
        basic_auth: args.datasource_user.as_ref().map(|u| BasicAuth {
            username: u.clone(),
            password: None,
            password_file: args.datasource_password_file.clone(),
        }),
        authorization: args
            .datasource_bearer_token_file
            .as_ref()
            .map(|f| Authorization {
                kind: None,
                credentials: None,
                credentials_file: Some(f.clone()),
            }),
        ..HttpClientConfig::default()
    }
}

/// The evaluator's options from its flags.
fn options(args: &Args) -> anyhow::Result<EvaluatorOptions> {
    let mut options = EvaluatorOptions::new(args.config_file.clone());
    options.listen_address = args.listen_address.clone();
    options.external_url = args.external_url.clone();
    options.extra_rule_files = args.rule_files.clone();
    options.state_file = Some(args.state_file.clone());
    options.resend_delay = args.resend_delay;
    options.outage_tolerance = args.outage_tolerance;
    options.for_grace_period = args.for_grace_period;
    options.notification_queue_capacity = args.queue_capacity;
    args.retention.apply(&mut options);
    options.storage_path = Some(args.storage_path.clone()).filter(|p| !p.as_os_str().is_empty());
    options.query_max_samples = args.query_max_samples;
    options.query_timeout = args.query_timeout;
    options.query_max_concurrency = args.query_max_concurrency;
    options.query_max_depth = args.query_max_depth;
    options.query_windows = args.windows.semantics();
    options.storage_max_series = args.storage_max_series;
    options.config_max_file_bytes = args.config_max_file_size;
    options.rules_max_file_bytes = args.rules_max_file_size;
    options.template_max_output_bytes =
        usize::try_from(args.template_max_output_bytes).unwrap_or(usize::MAX);
    options.template_timeout = args.template_timeout;
    options.web = args.web.options();
    args.features.apply(&mut options)?;
    if let Some(url) = &args.datasource_url {
        let mut cfg = RemoteConfig::new(url.clone());
        cfg.http = http_config(args);
        cfg.timeout = args.datasource_timeout;
        options.datasource = Some(cfg);
        if let Some(w) = &args.remote_write_url {
            let mut wc = RemoteWriteConfig::new(w.clone());
            wc.http = http_config(args);
            options.remote_write = Some(wc);
        }
    } else if args.remote_write_url.is_some() {
        anyhow::bail!("--remote-write.url needs --datasource.url (remote mode)");
    }
    Ok(options)
}

/// Runs the evaluator until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.config_check {
        return Ok(check(&args));
    }
    let options = options(&args)?;
    let runtime = super::runtime()?;
    runtime.block_on(lookout_evaluator::run(options, super::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// `--config.check`: `FILE: OK (...)` on stdout, or the errors on stderr.
fn check(args: &Args) -> ExitCode {
    match lookout_evaluator::check::check_config(
        &args.config_file,
        &args.rule_files,
        args.config_max_file_size,
        args.rules_max_file_size,
    ) {
        Ok(summary) => {
            println!("{}: {summary}", args.config_file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
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

    fn parse(flags: &[&str]) -> Result<EvaluatorOptions, String> {
        Cli::try_parse_from(std::iter::once("evaluator").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())
            .and_then(|cli| options(&cli.args).map_err(|e| e.to_string()))
    }

    #[test]
    fn enable_feature_native_histograms() {
        assert!(!parse(&[]).unwrap().native_histograms);
        assert!(
            parse(&["--enable-feature=native-histograms"])
                .unwrap()
                .native_histograms
        );
        let e = parse(&["--enable-feature=exemplar-storage,native-histograms"]).unwrap_err();
        assert!(e.contains("unknown feature \"exemplar-storage\""), "{e}");
    }

    #[test]
    fn limit_flags_default_to_the_built_in_limits() {
        let o = parse(&[]).expect("defaults");
        assert_eq!(o.config_max_file_bytes, 1 << 20);
        assert_eq!(o.rules_max_file_bytes, 10 << 20);
        assert_eq!(o.template_max_output_bytes, 64 << 10);
        assert_eq!(o.query_max_concurrency, 20);
        assert_eq!(o.storage_max_series, 1_000_000);
    }

    #[test]
    fn limit_flags_take_base_2_units_and_plain_numbers() {
        let o = parse(&[
            "--config.max-file-size=512KB",
            "--rules.max-file-size",
            "2MiB",
            "--rules.template.max-output-bytes=4096",
            "--query.max-concurrency=1",
            "--storage.max-series=0",
        ])
        .expect("valid flags");
        assert_eq!(o.config_max_file_bytes, 512 << 10);
        assert_eq!(o.rules_max_file_bytes, 2 << 20);
        assert_eq!(o.template_max_output_bytes, 4096);
        assert_eq!(o.query_max_concurrency, 1);
        assert_eq!(o.storage_max_series, 0);
    }

    #[test]
    fn storage_path_is_data_unless_empty() {
        assert_eq!(
            parse(&[]).unwrap().storage_path,
            Some(PathBuf::from("data/"))
        );
        assert_eq!(parse(&["--storage.tsdb.path="]).unwrap().storage_path, None);
        assert_eq!(
            parse(&["--storage.tsdb.path", ""]).unwrap().storage_path,
            None
        );
        assert_eq!(
            parse(&["--storage.tsdb.path=data"]).unwrap().storage_path,
            Some(PathBuf::from("data"))
        );
    }

    #[test]
    fn block_durations_are_prometheus_hidden_flags() {
        let o = parse(&[]).expect("defaults");
        assert_eq!(o.storage_min_block_duration, Duration::ZERO);
        assert_eq!(o.storage_max_block_duration, Duration::ZERO);
        let o = parse(&[
            "--storage.tsdb.min-block-duration=5m",
            "--storage.tsdb.max-block-duration=15m",
        ])
        .expect("valid flags");
        assert_eq!(o.storage_min_block_duration, Duration::from_secs(300));
        assert_eq!(o.storage_max_block_duration, Duration::from_secs(900));
        let e = parse(&["--storage.tsdb.min-block-duration=0s"]).unwrap_err();
        assert!(e.contains("must be more than zero"), "{e}");
    }

    #[test]
    fn windows_are_prometheus_3_unless_switched() {
        use lookout_promql::engine::WindowSemantics;
        let o = parse(&[]).expect("defaults");
        assert_eq!(o.query_windows, WindowSemantics::Prometheus3);
        let o = parse(&["--query.prometheus2-windows"]).expect("switch");
        assert_eq!(o.query_windows, WindowSemantics::Prometheus2);
    }

    #[test]
    fn bad_limit_values_are_refused_naming_the_flag() {
        for (flag, expected) in [
            ("--config.max-file-size=0", "must be greater than 0"),
            ("--rules.max-file-size=lots", "invalid size \"lots\""),
            (
                "--rules.max-file-size=10XB",
                "expected a size such as 10MiB",
            ),
            (
                "--rules.template.max-output-bytes=0",
                "must be greater than 0",
            ),
            ("--query.max-concurrency=0", "must be at least 1"),
            ("--query.max-concurrency=-3", "--query.max-concurrency"),
            ("--query.max-concurrency=many", "not a whole number"),
            ("--storage.max-series=-1", "--storage.max-series"),
            ("--storage.max-series=1e6", "--storage.max-series"),
        ] {
            let e = parse(&[flag]).expect_err(flag);
            let name = flag.split('=').next().unwrap_or(flag);
            assert!(e.contains(name), "{flag}: {e}");
            assert!(e.contains(expected), "{flag}: {e}");
        }
    }
}
