//! `lookout up`'s look at a configuration before anything starts: `--config.check`, and
//! the warning when a file of `--config.dir` points at Lookout's own endpoints on another
//! address than the `--web.listen-address.*` flags (the status page would then show
//! another instance, or nothing, without a word).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use lookout_web::yaml_locate::{Seg, locate};

use super::up::{
    DEFAULT_EVALUATOR_ADDRESS, DEFAULT_EXPORTER_ADDRESS, ScratchDir, config_dir_files,
    write_example,
};

/// `lookout up --config.check`: loads both configuration files (those of `config_dir`, or
/// the built-in ones) and the evaluator's rule files as `lookout up` would, prints `OK`
/// lines or the errors, and the address warnings; starts nothing. 0 valid, 1 not.
pub(super) fn check(
    config_dir: Option<&Path>,
    exporter: SocketAddr,
    evaluator: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let scratch;
    let (exporter_file, evaluator_file, shown) = match config_dir {
        Some(dir) => {
            let (e, v) = config_dir_files(dir)?;
            let shown = [e.display().to_string(), v.display().to_string()];
            (e, v, shown)
        }
        None => {
            scratch = ScratchDir::private()?;
            let (e, v) = write_example(&scratch.0, exporter, evaluator)?;
            let shown = ["built-in exporter.yml", "built-in evaluator.yml"].map(String::from);
            (e, v, shown)
        }
    };
    let limits = lookout_exporter::limits::Limits::default();
    let results = [
        super::exporter::check_file(&exporter_file, &limits),
        check_evaluator(&evaluator_file),
    ];
    let mut ok = true;
    for (name, result) in shown.iter().zip(results) {
        match result {
            Ok(summary) => println!("{name}: OK ({summary})"),
            Err(err) => {
                eprintln!("{err}");
                ok = false;
            }
        }
    }
    if config_dir.is_some() {
        for warning in address_mismatches(&exporter_file, &evaluator_file, exporter, evaluator) {
            eprintln!("warning: {warning}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The evaluator's configuration file and its rule files, checked as
/// `lookout evaluator --config.check` checks them: the summary inside its `OK (…)`, or
/// every error, one a line.
fn check_evaluator(path: &Path) -> Result<String, String> {
    use lookout_evaluator::limits::{MAX_CONFIG_FILE_BYTES, MAX_RULE_FILE_BYTES};
    let summary = lookout_evaluator::check::check_config(
        path,
        &[],
        MAX_CONFIG_FILE_BYTES,
        MAX_RULE_FILE_BYTES,
    )
    .map_err(|errors| errors.join("\n"))?
    .to_string();
    Ok(summary
        .strip_prefix("OK (")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(&summary)
        .to_string())
}

/// One of Lookout's two servers as the configuration files may name it.
struct Server {
    /// "exporter" or "evaluator".
    what: &'static str,
    flag: &'static str,
    default: &'static str,
    /// Where it listens this time.
    listen: SocketAddr,
    /// The jobs of the example configuration that watch it: the evaluator's
    /// `scrape_configs` job and the `job` label of the exporter's targets.
    jobs: [&'static str; 2],
}

/// Where the files of `--config.dir` point at Lookout's exporter or evaluator elsewhere
/// than the flags say: a scrape target or an exporter target at Lookout's default address
/// for a server listening on another one, or of one of the example's jobs watching a
/// server (`lookout-exporter-metrics`, `job: lookout-exporter`, ...) at an address that is
/// not the server's. One message per place, with file:line:col; a file that does not load
/// gives none (its error comes at start).
pub(super) fn address_mismatches(
    exporter_file: &Path,
    evaluator_file: &Path,
    exporter: SocketAddr,
    evaluator: SocketAddr,
) -> Vec<String> {
    let servers = [
        Server {
            what: "exporter",
            flag: "--web.listen-address.exporter",
            default: DEFAULT_EXPORTER_ADDRESS,
            listen: exporter,
            jobs: ["lookout-exporter-metrics", "lookout-exporter"],
        },
        Server {
            what: "evaluator",
            flag: "--web.listen-address.evaluator",
            default: DEFAULT_EVALUATOR_ADDRESS,
            listen: evaluator,
            jobs: ["lookout-evaluator-metrics", "lookout-evaluator"],
        },
    ];
    let mut out = Vec::new();
    // (path into the file, the text written there, its job, where it leads).
    let mut references: Vec<(&Path, Vec<Seg<'_>>, String, String, String)> = Vec::new();
    let exporter_config = lookout_exporter::config::Config::load(exporter_file).ok();
    if let Some(cfg) = &exporter_config {
        for (i, t) in cfg.targets.iter().enumerate() {
            let job = t.labels.get("job").cloned().unwrap_or_default();
            let path = vec![Seg::Key("targets"), Seg::Index(i), Seg::Key("target")];
            references.push((exporter_file, path, t.target.clone(), job, t.target.clone()));
        }
    }
    let evaluator_config = lookout_evaluator::config::EvaluatorConfig::load(evaluator_file).ok();
    if let Some(cfg) = &evaluator_config {
        for (i, sc) in cfg.scrape_configs.iter().enumerate() {
            for (j, group) in sc.static_configs.iter().enumerate() {
                for (k, target) in group.targets.iter().enumerate() {
                    let path = vec![
                        Seg::Key("scrape_configs"),
                        Seg::Index(i),
                        Seg::Key("static_configs"),
                        Seg::Index(j),
                        Seg::Key("targets"),
                        Seg::Index(k),
                    ];
                    let url = format!("{}://{target}", sc.scheme);
                    references.push((
                        evaluator_file,
                        path,
                        target.clone(),
                        sc.job_name.clone(),
                        url,
                    ));
                }
            }
        }
    }
    let texts: Vec<(&Path, String)> = [exporter_file, evaluator_file]
        .into_iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap_or_default()))
        .collect();
    for (file, path, written, job, url) in references {
        let Some((host, port)) = host_port(&url) else {
            continue;
        };
        if servers.iter().any(|s| reaches(host, port, s.listen)) {
            continue;
        }
        for s in &servers {
            let default: SocketAddr = s.default.parse().unwrap_or(s.listen);
            let why = if reaches(host, port, default) {
                format!("Lookout's default {} address", s.what)
            } else if s.jobs.contains(&job.as_str()) {
                format!("job {job:?}, which watches the {}", s.what)
            } else {
                continue;
            };
            let text = texts
                .iter()
                .find(|(f, _)| *f == file)
                .map_or("", |(_, t)| t.as_str());
            let place = match position(text, &path, &written) {
                Some((line, col)) => format!("{}:{line}:{col}", file.display()),
                None => file.display().to_string(),
            };
            let kind = if file == evaluator_file {
                "scrape target"
            } else {
                "target"
            };
            out.push(format!(
                "{place}: {kind} {written} ({why}) is not where the {what} listens \
                 ({flag} {listen}): Lookout would watch another instance, or nothing. \
                 Write {listen} there, or start with {flag} {host}:{port}",
                what = s.what,
                flag = s.flag,
                listen = s.listen,
            ));
            break;
        }
    }
    out
}

/// 1-based line and column of `written` at `path` in `text`: the key's position, moved to
/// the value when it is on the same line (flow lists such as `targets: [a, b]` included).
fn position(text: &str, path: &[Seg<'_>], written: &str) -> Option<(usize, usize)> {
    let (line, col) = locate(text, path)?;
    let on_line = text.lines().nth(line - 1)?;
    Some(
        match on_line.get(col - 1..).and_then(|rest| rest.find(written)) {
            Some(at) => (line, col + at),
            None => (line, col),
        },
    )
}

/// Host and port a target leads to: `scheme://host:port/...`, `host:port`, `[v6]:port`;
/// the scheme's port when none is written (http, ws: 80; https, wss: 443). `None` for
/// what names no port (an ICMP host, a Unix socket).
fn host_port(target: &str) -> Option<(&str, u16)> {
    let (scheme, rest) = match target.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, target),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match (port, scheme) {
        (Some(p), _) => p.parse().ok()?,
        (None, Some("http" | "ws")) => 80,
        (None, Some("https" | "wss")) => 443,
        _ => return None,
    };
    Some((host, port))
}

/// Whether a connection to `host:port` reaches a server listening on `listen`: the same
/// address, `localhost` for a loopback or wildcard listener, or any loopback or wildcard
/// address for a wildcard listener.
fn reaches(host: &str, port: u16, listen: SocketAddr) -> bool {
    if port != listen.port() {
        return false;
    }
    let l = listen.ip();
    if host.eq_ignore_ascii_case("localhost") {
        return l.is_loopback() || l.is_unspecified();
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip == l || (l.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_as_host_and_port() {
        assert_eq!(host_port("127.0.0.1:9115"), Some(("127.0.0.1", 9115)));
        assert_eq!(
            host_port("http://127.0.0.1:9095/-/healthy"),
            Some(("127.0.0.1", 9095))
        );
        assert_eq!(
            host_port("https://u:p@example.com/x"),
            Some(("example.com", 443))
        );
        assert_eq!(host_port("http://[::1]:9115/health"), Some(("::1", 9115)));
        assert_eq!(host_port("example.com"), None);
    }

    #[test]
    fn localhost_and_wildcards_reach_their_listeners() {
        let at = |s: &str| s.parse::<SocketAddr>().expect("address");
        assert!(reaches("127.0.0.1", 9115, at("127.0.0.1:9115")));
        assert!(reaches("localhost", 9115, at("127.0.0.1:9115")));
        assert!(reaches("127.0.0.1", 9115, at("0.0.0.0:9115")));
        assert!(!reaches("127.0.0.1", 9115, at("127.0.0.1:19115")));
        assert!(!reaches("10.0.0.1", 9115, at("127.0.0.1:9115")));
        assert!(!reaches("localhost", 9115, at("10.0.0.1:9115")));
    }
}
