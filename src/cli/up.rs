//! `lookout up`: the exporter and the evaluator in one process, on loopback, with the shipped
//! example configuration (`examples/up/`) and rules (`rules/*.rules.yml`) built into the
//! binary, so `cargo run --release -- up` needs nothing else, from any directory.
//!
//! The libraries read their configuration from files (and re-read them on SIGHUP), so the
//! built-in files are written to a temporary directory named after the user and the
//! evaluator's port (the same at every start, so rule file paths stay stable), laid out as
//! `lookout init` writes it, and removed on exit. `--config.dir DIR` uses
//! `DIR/exporter.yml` and `DIR/evaluator.yml` in place instead. Both listen addresses are
//! checked before anything starts, so a port held by another program is an error naming
//! the flag, never a banner pointing at someone else's server; and the files of
//! `--config.dir` are compared with the address flags, so a target left at another
//! address is a warning naming its file:line:col (see `up_check`, which also serves
//! `--config.check`). `--rules.state-file` keeps `for` timers across restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// The built-in exporter configuration.
pub const EXPORTER_YML: &str = include_str!("../../examples/up/exporter.yml");
/// The built-in evaluator configuration.
pub const EVALUATOR_YML: &str = include_str!("../../examples/up/evaluator.yml");
/// The shipped rule files, by file name.
pub const RULE_FILES: &[(&str, &str)] = &[
    (
        "availability.rules.yml",
        include_str!("../../examples/up/rules/availability.rules.yml"),
    ),
    (
        "certificates.rules.yml",
        include_str!("../../examples/up/rules/certificates.rules.yml"),
    ),
    (
        "dns.rules.yml",
        include_str!("../../examples/up/rules/dns.rules.yml"),
    ),
    (
        "latency.rules.yml",
        include_str!("../../examples/up/rules/latency.rules.yml"),
    ),
];

/// The exporter address written in the built-in configuration.
pub const DEFAULT_EXPORTER_ADDRESS: &str = "127.0.0.1:9115";
/// The evaluator address written in the built-in configuration.
pub const DEFAULT_EVALUATOR_ADDRESS: &str = "127.0.0.1:9095";

/// Flags of `lookout up`.
#[derive(clap::Args)]
pub struct Args {
    /// Address of the exporter (/metrics, /probe, /heartbeat/NAME).
    #[arg(
        long = "web.listen-address.exporter",
        value_name = "ADDR",
        default_value = DEFAULT_EXPORTER_ADDRESS
    )]
    exporter_address: SocketAddr,
    /// Address of the evaluator (status page, /api/v1/*, /metrics).
    #[arg(
        long = "web.listen-address.evaluator",
        value_name = "ADDR",
        default_value = DEFAULT_EVALUATOR_ADDRESS
    )]
    evaluator_address: SocketAddr,
    /// Use DIR/exporter.yml and DIR/evaluator.yml (e.g. a copy of examples/up/) instead of
    /// the built-in configuration. The files are used as they are: their addresses must
    /// match the --web.listen-address.* flags (a target or scrape target at another
    /// Lookout address is reported with its file:line:col at start).
    #[arg(long = "config.dir", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Check the two configuration files (of --config.dir, or the built-in ones) and the
    /// rule files, print OK or the errors, and exit (0 valid, 1 not) without starting
    /// anything.
    #[arg(long = "config.check")]
    config_check: bool,
    /// File keeping the alerts' `for` timers across restarts (written atomically), as
    /// `lookout evaluator --rules.state-file`. Without it nothing is written outside the
    /// scratch directory and `for` timers start afresh at every start.
    #[arg(long = "rules.state-file", value_name = "FILE")]
    state_file: Option<PathBuf>,
    #[command(flatten)]
    windows: super::WindowArgs,
    #[command(flatten)]
    retention: super::RetentionArgs,
    #[command(flatten)]
    features: super::FeatureArgs,
    /// TLS, basic auth and lifecycle settings, applied to both servers. The built-in
    /// configuration scrapes and probes them over plain HTTP without a password, so with
    /// TLS or `basic_auth_scope: all` use `--config.dir` with matching `scrape_configs`
    /// (`scheme`, `tls_config`, `basic_auth`); `basic_auth_scope: write` works as it is.
    #[command(flatten)]
    web: super::WebArgs,
    /// The evaluator's data directory, whose write-ahead log keeps history across
    /// restarts. `auto` (the default) is a directory per user and evaluator port that does
    /// not depend on where `lookout up` is started ($XDG_DATA_HOME/lookout/up-PORT, or
    /// ~/.local/share/lookout/up-PORT; memory only without a home directory). Empty
    /// (`--storage.tsdb.path=`): memory only.
    #[arg(
        long = "storage.tsdb.path",
        value_name = "DIR",
        default_value = "auto",
        value_parser = super::any_path
    )]
    storage_path: PathBuf,
}

/// `--storage.tsdb.path` of `lookout up`: empty is memory only, `auto` the per-user data
/// directory (memory only without a home directory), anything else as given.
fn up_storage_path(flag: &Path, port: u16) -> Option<PathBuf> {
    if flag.as_os_str().is_empty() {
        return None;
    }
    if flag.as_os_str() != "auto" {
        return Some(flag.to_path_buf());
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })?;
    Some(base.join("lookout").join(format!("up-{port}")))
}

/// A directory removed when dropped.
pub(super) struct ScratchDir(pub(super) PathBuf);

impl ScratchDir {
    /// The built-in configuration's directory for one evaluator address: the same path at
    /// every start, so rule file paths (and the `rule_group` labels and state keys made
    /// from them) do not change between restarts. Whatever an earlier run left there is
    /// replaced; the caller has made sure no other `lookout up` owns the address.
    fn create(evaluator: SocketAddr) -> anyhow::Result<ScratchDir> {
        let uid = user_id();
        ScratchDir::fresh(format!("lookout-up-{uid}-{}", evaluator.port()))
    }

    /// A directory of this process's own, for `--config.check` to write the built-in
    /// configuration into without touching the one a running `lookout up` uses.
    pub(super) fn private() -> anyhow::Result<ScratchDir> {
        ScratchDir::fresh(format!(
            "lookout-up-check-{}-{}",
            user_id(),
            std::process::id()
        ))
    }

    /// An empty directory `name` in the temporary directory (whatever was there is removed).
    fn fresh(name: String) -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the old {}", path.display()))?;
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

/// The user's id (from the owner of `/proc/self`), so that users do not share a directory.
fn user_id() -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
    }
    #[cfg(not(unix))]
    {
        0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove the scratch directory");
        }
    }
}

/// Fails with the flag's name when `address` cannot be bound (another program, or another
/// `lookout up`, listens there), before anything is written or started.
fn check_free(address: SocketAddr, flag: &str) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(address) {
        Ok(_) => Ok(()),
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "is in use by another program (another `lookout up`?)".to_string()
                }
                std::io::ErrorKind::PermissionDenied => "may not be bound by this user".to_string(),
                _ => {
                    let text = e.to_string();
                    match text.find(" (os error") {
                        Some(at) => text[..at].to_string(),
                        None => text,
                    }
                }
            };
            anyhow::bail!("{address} {why}: choose another with {flag}")
        }
    }
}

/// Replaces the default addresses in a built-in configuration by the chosen ones.
pub fn with_addresses(text: &str, exporter: SocketAddr, evaluator: SocketAddr) -> String {
    text.replace(DEFAULT_EXPORTER_ADDRESS, &exporter.to_string())
        .replace(DEFAULT_EVALUATOR_ADDRESS, &evaluator.to_string())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes the example under `dir` as a self-contained directory: `exporter.yml`,
/// `evaluator.yml` and `rules/*.rules.yml`, with the two addresses; returns the exporter
/// and evaluator configuration paths.
pub fn write_example(
    dir: &Path,
    exporter: SocketAddr,
    evaluator: SocketAddr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let exporter_file = dir.join("exporter.yml");
    let evaluator_file = dir.join("evaluator.yml");
    write(
        &exporter_file,
        &with_addresses(EXPORTER_YML, exporter, evaluator),
    )?;
    write(
        &evaluator_file,
        &with_addresses(EVALUATOR_YML, exporter, evaluator),
    )?;
    for (name, text) in RULE_FILES {
        write(&dir.join("rules").join(name), text)?;
    }
    Ok((exporter_file, evaluator_file))
}

/// `DIR/exporter.yml` and `DIR/evaluator.yml`, which must exist.
pub(super) fn config_dir_files(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let files = (dir.join("exporter.yml"), dir.join("evaluator.yml"));
    for f in [&files.0, &files.1] {
        anyhow::ensure!(f.is_file(), "{}: no such file (--config.dir)", f.display());
    }
    Ok(files)
}

/// Runs exporter and evaluator until Ctrl-C or SIGTERM, or checks the configuration.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.config_check {
        return super::up_check::check(
            args.config_dir.as_deref(),
            args.exporter_address,
            args.evaluator_address,
        );
    }
    check_free(args.exporter_address, "--web.listen-address.exporter")?;
    check_free(args.evaluator_address, "--web.listen-address.evaluator")?;
    let scratch;
    let (exporter_file, evaluator_file) = match &args.config_dir {
        Some(dir) => {
            let files = config_dir_files(dir)?;
            for warning in super::up_check::address_mismatches(
                &files.0,
                &files.1,
                args.exporter_address,
                args.evaluator_address,
            ) {
                eprintln!("warning: {warning}");
            }
            files
        }
        None => {
            scratch = ScratchDir::create(args.evaluator_address)?;
            write_example(&scratch.0, args.exporter_address, args.evaluator_address)?
        }
    };

    let exporter_options = {
        let mut o = lookout_exporter::RunOptions::new(exporter_file);
        o.listen_address = args.exporter_address.to_string();
        o.web = args.web.options();
        o
    };
    let evaluator_options = {
        let mut o = lookout_evaluator::EvaluatorOptions::new(evaluator_file);
        o.listen_address = args.evaluator_address.to_string();
        o.external_url = Some(format!("http://{}", args.evaluator_address));
        o.web = args.web.options();
        o.query_windows = args.windows.semantics();
        // Without --rules.state-file nothing is written outside the scratch directory, and
        // `for` timers start afresh.
        o.state_file = args.state_file.clone();
        o.storage_path = up_storage_path(&args.storage_path, args.evaluator_address.port());
        args.retention.apply(&mut o);
        args.features.apply(&mut o)?;
        o
    };

    let runtime = super::runtime()?;
    runtime.block_on(serve(
        exporter_options,
        evaluator_options,
        args.exporter_address,
        args.evaluator_address,
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    exporter_options: lookout_exporter::RunOptions,
    evaluator_options: lookout_evaluator::EvaluatorOptions,
    exporter_address: SocketAddr,
    evaluator_address: SocketAddr,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // The exporter is bound before the evaluator starts, so the evaluator's first scrape of
    // it finds it listening.
    let exporter = lookout_exporter::Server::bind(exporter_options)
        .await
        .context("starting the exporter")?;
    let exporter_task = {
        let tx = stop_tx.clone();
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(async move {
            let r = exporter.serve(shutdown).await;
            let _ = tx.send(true);
            r
        })
    };
    let evaluator_task = {
        let tx = stop_tx.clone();
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(async move {
            let r = lookout_evaluator::run(evaluator_options, shutdown).await;
            let _ = tx.send(true);
            r
        })
    };
    {
        let tx = stop_tx.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = super::shutdown_signal() => { let _ = tx.send(true); }
                _ = rx.wait_for(|stop| *stop) => {}
            }
        });
    }

    // The evaluator listens once its configuration and rules are loaded.
    let mut rx = stop_rx.clone();
    let listening = loop {
        if tokio::net::TcpStream::connect(evaluator_address)
            .await
            .is_ok()
        {
            break true;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = rx.wait_for(|stop| *stop) => break false,
        }
    };
    if listening {
        println!(
            "Lookout is up (exporter and evaluator, embedded storage). Open:\n  \
             status page       http://{evaluator_address}/\n  \
             evaluator API     http://{evaluator_address}/api/v1/alerts  (also /api/v1/rules, /api/v1/query, /metrics)\n  \
             exporter metrics  http://{exporter_address}/metrics  (also /probe?target=...&module=..., /health)\n\
             Press Ctrl-C to stop."
        );
    }

    let exporter_result = exporter_task.await.context("exporter task")?;
    let evaluator_result = evaluator_task.await.context("evaluator task")?;
    evaluator_result.context("evaluator")?;
    exporter_result.context("exporter")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_feature_native_histograms_as_the_evaluator() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let features = |flags: &[&str]| {
            let cli = <Cli as clap::Parser>::try_parse_from(
                std::iter::once("up").chain(flags.iter().copied()),
            )
            .expect("flags parse");
            let mut o = lookout_evaluator::EvaluatorOptions::new(PathBuf::from("evaluator.yml"));
            cli.args
                .features
                .apply(&mut o)
                .map(|()| o.native_histograms)
        };
        assert!(!features(&[]).unwrap());
        assert!(features(&["--enable-feature=native-histograms"]).unwrap());
        let e = features(&["--enable-feature", "exemplar-storage"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown feature \"exemplar-storage\""),
            "{e}"
        );
    }

    #[test]
    fn every_shipped_rule_file_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".rules.yml"))
                    .collect()
            })
            .unwrap_or_default();
        on_disk.sort();
        let built_in: Vec<String> = RULE_FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert!(!on_disk.is_empty());
        assert_eq!(built_in, on_disk, "add new rules/*.rules.yml to RULE_FILES");
    }

    #[test]
    fn addresses_are_rewritten_in_the_built_in_configuration() {
        let exp = SocketAddr::from(([127, 0, 0, 1], 19115));
        let ev = SocketAddr::from(([127, 0, 0, 1], 19095));
        let e = with_addresses(EXPORTER_YML, exp, ev);
        assert!(e.contains("http://127.0.0.1:19095/-/healthy"));
        assert!(e.contains("target: 127.0.0.1:19115"));
        assert!(!e.contains(DEFAULT_EXPORTER_ADDRESS) && !e.contains(DEFAULT_EVALUATOR_ADDRESS));
        let v = with_addresses(EVALUATOR_YML, exp, ev);
        assert!(v.contains("[127.0.0.1:19115]") && v.contains("[127.0.0.1:19095]"));
    }
}
