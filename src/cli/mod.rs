//! Sub-commands. Each module parses its own flags and calls a library crate's entry point.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

pub mod evaluator;
pub mod exporter;
pub mod init;
pub mod promqltest;
pub mod rules;
pub mod up;
mod up_check;

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
    /// Write the example `lookout up` runs (exporter.yml, evaluator.yml, rules/) into a new
    /// directory, to edit and run with `lookout up --config.dir DIR`.
    Init(init::Args),
}

/// `--web.config.file` and `--web.enable-lifecycle`, shared by the servers' sub-commands.
#[derive(clap::Args, Clone, Debug)]
pub struct WebArgs {
    /// Web configuration file in the format of Prometheus's exporter-toolkit: TLS
    /// (`tls_server_config`), basic auth (`basic_auth_users`, bcrypt), response headers
    /// (`http_server_config`). Re-read when it changes.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,
    /// Serve `POST /-/reload`; `--web.enable-lifecycle=false` answers it 403. On by default
    /// in Lookout (Prometheus has it off).
    #[arg(
        long = "web.enable-lifecycle",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub enable_lifecycle: bool,
    /// Password checks (bcrypt) that may wait or run at once; past it, requests needing a
    /// new check get 429 at once. Logins already verified are cached and never wait.
    #[arg(
        long = "web.auth.max-pending-checks",
        value_name = "N",
        default_value_t = lookout_web::auth::DEFAULT_MAX_PENDING,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000)
    )]
    pub max_pending_auth_checks: usize,
}

impl WebArgs {
    /// The serve options these flags describe.
    pub fn options(&self) -> lookout_web::ServeOptions {
        lookout_web::ServeOptions {
            web_config_file: self.web_config_file.clone(),
            enable_lifecycle: self.enable_lifecycle,
            max_pending_auth_checks: self.max_pending_auth_checks,
        }
    }
}

/// `--query.prometheus2-windows`, shared by the sub-commands that evaluate PromQL.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct WindowArgs {
    /// Cut windows as Prometheus 2 and promtool 2.x do: left-closed, `[t - range, t]` for
    /// range selectors and subqueries and `[t - 5m, t]` for the instant lookback, so a
    /// sample exactly on a window's left edge counts. Without it windows are left-open, as
    /// in Prometheus 3. For rules and unit tests written for Prometheus 2.
    #[arg(long = "query.prometheus2-windows")]
    pub prometheus2_windows: bool,
}

impl WindowArgs {
    /// The window semantics these flags select.
    pub fn semantics(self) -> lookout_promql::engine::WindowSemantics {
        if self.prometheus2_windows {
            lookout_promql::engine::WindowSemantics::Prometheus2
        } else {
            lookout_promql::engine::WindowSemantics::Prometheus3
        }
    }
}

/// `--enable-feature`, Prometheus 2.x's feature switches, shared by `evaluator` and `up`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FeatureArgs {
    /// Prometheus 2.x feature switches, comma-separated or repeated. Only
    /// `native-histograms` is known: scrape configs that do not set
    /// `scrape_native_histograms` (nor `global` does) ask for protobuf and store native
    /// histograms.
    #[arg(long = "enable-feature", value_name = "FEATURE", value_delimiter = ',')]
    pub enable_feature: Vec<String>,
}

impl FeatureArgs {
    /// Sets the evaluator options the features turn on; an unknown feature is an error.
    pub fn apply(&self, options: &mut lookout_evaluator::EvaluatorOptions) -> anyhow::Result<()> {
        for feature in &self.enable_feature {
            match feature.trim() {
                "native-histograms" => options.native_histograms = true,
                other => anyhow::bail!(
                    "--enable-feature: unknown feature {other:?} (the evaluator knows native-histograms)"
                ),
            }
        }
        Ok(())
    }
}

/// `--storage.tsdb.retention.time` and `.size`, shared by `evaluator` and `up`.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct RetentionArgs {
    /// Embedded mode: how long scraped samples and rule outputs are kept (in memory and,
    /// with a data directory, in its blocks).
    #[arg(long = "storage.tsdb.retention.time", value_name = "DURATION", default_value = "1d", value_parser = lookout_promql::duration::parse_duration)]
    pub time: std::time::Duration,
    /// Embedded mode with a data directory: most bytes of persisted blocks plus the
    /// write-ahead log; past it the oldest blocks are deleted, as Prometheus does (units
    /// are base 2: 512MiB, 10GB = 10 GiB). Unset: no size limit.
    #[arg(long = "storage.tsdb.retention.size", value_name = "SIZE", value_parser = evaluator::parse_size)]
    pub size: Option<u64>,
    /// Range of the blocks the head is cut into (2h); the head is written out, and the
    /// series that stopped leave memory, once it spans 1.5 of them. Hidden, as in
    /// Prometheus: for tests and benches.
    #[arg(long = "storage.tsdb.min-block-duration", value_name = "DURATION", hide = true, value_parser = positive_duration)]
    pub min_block: Option<std::time::Duration>,
    /// Widest block compaction makes (10% of the retention time, at most 31d). Hidden, as
    /// in Prometheus.
    #[arg(long = "storage.tsdb.max-block-duration", value_name = "DURATION", hide = true, value_parser = positive_duration)]
    pub max_block: Option<std::time::Duration>,
}

/// A duration above zero.
fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match lookout_promql::duration::parse_duration(s).map_err(|e| e.to_string())? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

impl RetentionArgs {
    /// Sets the evaluator's retention options from these flags.
    pub fn apply(self, options: &mut lookout_evaluator::EvaluatorOptions) {
        options.storage_retention = self.time;
        options.storage_retention_size = self.size.unwrap_or(0);
        options.storage_min_block_duration = self.min_block.unwrap_or_default();
        options.storage_max_block_duration = self.max_block.unwrap_or_default();
    }
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
    // Colours only for a person at a terminal: a pipe, a file or a log collector gets plain
    // text (and `NO_COLOR` turns them off anyway).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The multi-threaded async runtime the servers' sub-commands run on. Its threads (the
/// async workers and the blocking pool, where queries are evaluated and rule files parsed)
/// get the stack PromQL's recursion needs up to `--query.max-depth`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(lookout_promql::engine::depth::EVAL_STACK_BYTES)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Completes on Ctrl-C or (on Unix) SIGTERM: the shutdown signal of the servers'
/// sub-commands.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("interrupted; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Runs a sub-command and returns the process exit code.
/// glibc gives each thread that allocates under contention an arena of its own (up to 8 per
/// core), each holding on to its own high-water mark. With the two async workers of a 2-core
/// machine that was 2.3 MiB of the exporter's 13.5 MiB peak under 16 concurrent `/probe`
/// requests and 8.7 MiB of the remote-mode evaluator's 51 MiB (bench/vmalert); in the
/// embedded evaluator, whose scrapes parse on short-lived blocking threads, 121 of 299 MiB
/// with 10,000 scrape targets (bench/sd_churn: 178 MiB with one arena, 228 with four). The
/// exporter's and the remote-mode evaluator's allocations are small and short-lived, and
/// glibc's per-thread cache serves most of them without the arena lock: one arena. The
/// embedded evaluator's queries allocate in bulk on several threads at once: one arena per
/// core, so that they do not queue on one lock. `MALLOC_ARENA_MAX` in the environment still
/// decides when set. Called before any thread but the first is started: a thread that
/// already allocated keeps its arena.
///
/// The embedded evaluator also gets a fixed mmap threshold (`EMBEDDED_MMAP_THRESHOLD`).
pub fn limit_malloc_arenas(command: &Command) {
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
    let (arenas, embedded) = match command {
        Command::Exporter(_) => (1, false),
        Command::Evaluator(args) if args.is_remote() => (1, false),
        Command::Evaluator(_) | Command::Up(_) => (cores(), true),
        _ => return,
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let arenas = i32::try_from(arenas).unwrap_or(i32::MAX).max(1);
        // SAFETY: mallopt only changes a malloc tunable; M_ARENA_MAX takes any positive value.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if embedded
        && std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"))
    {
        // SAFETY: as above; M_MMAP_THRESHOLD takes any size up to 32 MiB.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, EMBEDDED_MMAP_THRESHOLD);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (arenas, embedded);
}

/// Allocations from this size up are mapped on their own and unmapped when freed, in the
/// embedded evaluator. glibc starts at 128 KiB but raises the threshold to the size of each
/// mapped block freed (up to 32 MiB), so that after the first queries and block writes their
/// buffers of several MiB (a selection's samples, a merge of blocks, a JSON answer) come from
/// the arenas, between the head's long-lived series, and the holes they leave there are
/// seldom a whole free page. Under series churn (bench/sd_churn: 10,000 targets, 10% replaced
/// a minute, the head cut every few minutes) the live heap stayed level from cut to cut
/// (heaptrack) while the resident memory just before each cut rose by 6-17 MiB a cycle; with
/// the threshold fixed those peaks were about 20 MiB lower, but still rose (BENCHMARKS.md).
/// Setting the threshold turns the adjustment off. `MALLOC_MMAP_THRESHOLD_` or
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…` in the environment still decides when set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const EMBEDDED_MMAP_THRESHOLD: i32 = 256 * 1024;

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Exporter(args) => exporter::run(args),
        Command::Promqltest(args) => promqltest::run(args),
        Command::Evaluator(args) => evaluator::run(*args),
        Command::Rules(args) => rules::run(args),
        Command::Up(args) => up::run(args),
        Command::Init(args) => init::run(args),
    }
}

/// A path flag that may be empty (clap's own path parser refuses `--flag=`): for
/// `--storage.tsdb.path=""`, memory only.
fn any_path(s: &str) -> Result<std::path::PathBuf, std::convert::Infallible> {
    Ok(std::path::PathBuf::from(s))
}
