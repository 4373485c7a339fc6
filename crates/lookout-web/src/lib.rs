//! Who may talk to Lookout's HTTP servers: TLS, client certificates, basic authentication and
//! security headers from a web configuration file in the format of Prometheus's
//! exporter-toolkit (`--web.config.file`, see [`config`]), shared by the exporter and the
//! evaluator.
//!
//! [`serve`] accepts connections itself (hyper-util, one task per connection) so that each
//! new connection sees the current configuration:
//!
//! * The web configuration file and the certificate, key and CA files it names are checked
//!   for changes (modification time, size, inode) on every new connection and request, and
//!   re-read when they changed — certificates rotate and users change without a restart. A
//!   changed file that is broken is logged and the previous configuration stays in force
//!   (the start-up load, by contrast, refuses to start).
//! * With TLS configured, a connection whose first byte is not a TLS handshake gets Go's
//!   answer, `400 Bad Request` "Client sent an HTTP request to an HTTPS server.", and is
//!   closed. A handshake that fails (say a required client certificate is missing) closes
//!   the connection.
//! * Every request passes [`guard`]: configured headers are added to every response; with
//!   `basic_auth_users`, a request without the right user and password gets `401` with
//!   `WWW-Authenticate: Basic` and nothing else; with lifecycle endpoints off
//!   ([`ServeOptions::enable_lifecycle`]), `/-/reload` and `/-/quit` get `403`.
//! * A `HEAD` request's response never carries a body, whatever answered it (a route, the
//!   fallback, the 401 or 429 above): over HTTP/2 body bytes would reset the stream.
//! * HTTP/2 is offered over TLS (ALPN `h2`) unless `http_server_config.http2: false`; plain
//!   connections speak HTTP/1.1, as Go's server does.
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod files;
pub mod metrics;
pub mod tls;
pub mod yaml_depth;
pub mod yaml_locate;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub use config::{WebConfig, WebConfigError};

/// Paths that change the server's lifecycle, refused when lifecycle endpoints are off.
pub const LIFECYCLE_PATHS: &[&str] = &["/-/reload", "/-/quit"];

/// What Go's HTTP server writes to a plain-HTTP client on a TLS port.
pub const PLAIN_HTTP_ON_TLS_PORT: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// How long a new connection may take to send its first byte and finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one HTTP server (command-line flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `--web.config.file`: TLS and authentication; `None` serves plain HTTP to everyone.
    pub web_config_file: Option<PathBuf>,
    /// `--web.enable-lifecycle`: whether `/-/reload` (and `/-/quit`) are served. On by
    /// default in Lookout (off in Prometheus).
    pub enable_lifecycle: bool,
    /// `--web.auth.max-pending-checks`: password checks that may wait for or run bcrypt at
    /// once; past it, `429` (see [`auth`]).
    pub max_pending_auth_checks: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            web_config_file: None,
            enable_lifecycle: true,
            max_pending_auth_checks: auth::DEFAULT_MAX_PENDING,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The web configuration is invalid.
    #[error(transparent)]
    Config(#[from] WebConfigError),
    /// Accepting connections failed.
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A file's identity and version, to notice changes.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// One loaded configuration and the files it came from.
#[derive(Debug)]
struct Loaded {
    config: Arc<WebConfig>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The files looked at and their stamps when last read (successfully or not).
    stamps: Vec<(PathBuf, Stamp)>,
    /// The stamp of the web configuration file last refused, so that a refusal is logged
    /// and counted once per change of the file.
    refused: Stamp,
}

/// How long a web configuration file must have been left alone before a change that turns
/// basic authentication or TLS off is taken: a file being rewritten in place reads empty
/// or cut short for a moment, and that moment must not open the server.
pub const LAPSE_SETTLE: Duration = Duration::from_secs(1);

/// Why `next` may not replace `previous` yet: it turns authentication or TLS off while the
/// file is empty (never taken) or changed less than [`LAPSE_SETTLE`] ago (taken once it
/// has settled: the `bool` says to look again).
fn lapse(previous: &Loaded, next: &Loaded, path: &Path) -> Option<(String, bool)> {
    let auth_off = !previous.config.users.is_empty() && next.config.users.is_empty();
    let tls_off = previous.tls.is_some() && next.tls.is_none();
    if !auth_off && !tls_off {
        return None;
    }
    let what = match (auth_off, tls_off) {
        (true, true) => "basic authentication and TLS",
        (true, false) => "basic authentication",
        _ => "TLS",
    };
    let meta = std::fs::metadata(path).ok();
    if meta.as_ref().is_none_or(|m| m.len() == 0) {
        return Some((
            format!(
                "{}: the file is empty, which would turn {what} off; keeping the previous web configuration (restart to serve without {what})",
                path.display()
            ),
            false,
        ));
    }
    let age = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if age < LAPSE_SETTLE {
        return Some((
            format!(
                "{}: the new file turns {what} off; it is taken once it has not changed for {}s (it may still be being written)",
                path.display(),
                LAPSE_SETTLE.as_secs()
            ),
            true,
        ));
    }
    None
}

fn load(path: &Path) -> Result<Loaded, WebConfigError> {
    let mut stamps = vec![(path.to_path_buf(), stamp(path))];
    let config = WebConfig::load(path)?;
    let tls = if config.tls.is_enabled() {
        let built = tls::server_config(&config).map_err(|e| {
            WebConfigError::Invalid(format!("{}: tls_server_config: {e}", path.display()))
        })?;
        Some(built)
    } else {
        None
    };
    stamps.extend(config.tls.files().into_iter().map(|f| {
        let s = stamp(&f);
        (f, s)
    }));
    Ok(Loaded {
        config: Arc::new(config),
        tls,
        stamps,
        refused: None,
    })
}

/// The web configuration in force, re-read when its files change.
#[derive(Debug)]
pub struct WebState {
    path: Option<PathBuf>,
    current: RwLock<Arc<Loaded>>,
    reloading: Mutex<()>,
}

impl WebState {
    /// Loads the web configuration (or none, for plain HTTP without authentication).
    pub fn new(path: Option<PathBuf>) -> Result<WebState, WebConfigError> {
        let loaded = match &path {
            Some(p) => load(p)?,
            None => Loaded {
                config: Arc::new(WebConfig::default()),
                tls: None,
                stamps: Vec::new(),
                refused: None,
            },
        };
        if let Some(p) = &path {
            tracing::info!(file = %p.display(), tls = loaded.tls.is_some(), basic_auth = !loaded.config.users.is_empty(), "web configuration loaded");
        }
        Ok(WebState {
            path,
            current: RwLock::new(Arc::new(loaded)),
            reloading: Mutex::new(()),
        })
    }

    /// The configuration in force (re-read first if a file changed).
    pub fn config(&self) -> Arc<WebConfig> {
        self.current().config.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        let loaded = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(path) = &self.path else {
            return loaded;
        };
        if loaded.stamps.iter().all(|(f, s)| stamp(f) == *s) {
            return loaded;
        }
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let latest = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !Arc::ptr_eq(&latest, &loaded) {
            return latest;
        }
        let next = match load(path) {
            Ok(next) => match lapse(&loaded, &next, path) {
                None => {
                    tracing::info!(file = %path.display(), tls = next.tls.is_some(), basic_auth = !next.config.users.is_empty(), "web configuration reloaded");
                    next
                }
                Some((why, again)) => keep_previous(&loaded, path, &why, again),
            },
            Err(err) => keep_previous(&loaded, path, &err.to_string(), false),
        };
        let next = Arc::new(next);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        next
    }
}

/// The configuration in force after a refused reload: the previous one, with the stamps of
/// the files now (so the refusal is not repeated until they change again), or with no
/// stamp for the configuration file when it must be looked at again (`again`). Logged and
/// counted once per change of the file.
fn keep_previous(loaded: &Loaded, path: &Path, why: &str, again: bool) -> Loaded {
    let now = stamp(path);
    if now != loaded.refused {
        tracing::error!(error = %why, "web configuration reload failed; keeping the previous one");
        metrics::RELOAD_FAILURES.inc();
    }
    let mut stamps: Vec<(PathBuf, Stamp)> =
        vec![(path.to_path_buf(), if again { None } else { now })];
    stamps.extend(
        loaded
            .stamps
            .iter()
            .skip(1)
            .map(|(f, _)| (f.clone(), stamp(f))),
    );
    Loaded {
        config: loaded.config.clone(),
        tls: loaded.tls.clone(),
        stamps,
        refused: now,
    }
}

/// What [`guard`] needs.
#[derive(Debug)]
pub struct Guard {
    web: Arc<WebState>,
    auth: auth::Authenticator,
    enable_lifecycle: bool,
    /// Path prefixes whose every method changes something (see
    /// [`WebServer::with_write_paths`]).
    write_paths: &'static [&'static str],
}

/// Whether `basic_auth_scope: write` asks a password for this request: any method but
/// `GET`, `HEAD` and `OPTIONS`, and every method under one of `write_paths`.
fn is_write(method: &Method, path: &str, write_paths: &[&str]) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || write_paths.iter().any(|p| path.starts_with(p))
}

/// The per-request checks: basic authentication, lifecycle endpoints, response headers.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let config = guard.web.config();
    let head = request.method() == Method::HEAD;
    let needs_auth = !config.users.is_empty()
        && (config.auth_scope == config::AuthScope::All
            || is_write(request.method(), request.uri().path(), guard.write_paths));
    let verdict = if needs_auth {
        guard
            .auth
            .check(&config.users, request.headers().get(header::AUTHORIZATION))
            .await
    } else {
        auth::Verdict::Allowed
    };
    let mut response = if verdict == auth::Verdict::Denied {
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Basic"),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            "Unauthorized\n",
        )
            .into_response()
    } else if verdict == auth::Verdict::Busy {
        metrics::AUTH_CHECKS_REJECTED.inc();
        (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::RETRY_AFTER, "1"),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            format!(
                "Too many password checks pending: the limit of {} (--web.auth.max-pending-checks) is reached; retry later\n",
                guard.auth.max_pending()
            ),
        )
            .into_response()
    } else if !guard.enable_lifecycle && LIFECYCLE_PATHS.contains(&request.uri().path()) {
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Lifecycle API is not enabled.\n",
        )
            .into_response()
    } else {
        next.run(request).await
    };
    for (name, value) in &config.http.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    if head {
        // A HEAD response has no body, whoever built it: axum strips it for the routes it
        // matches, not for the fallback or the answers above. Over HTTP/2, body bytes on a
        // HEAD response make h2 reset the stream (PROTOCOL_ERROR) instead of answering;
        // HTTP/1 just drops them. The headers, Content-Length included, stay as GET's.
        use axum::body::HttpBody as _;
        let (mut parts, body) = response.into_parts();
        if let Some(len) = body.size_hint().exact() {
            parts
                .headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
        response = Response::from_parts(parts, axum::body::Body::empty());
    }
    response
}

/// A server ready to serve: its web configuration is loaded and valid.
#[derive(Debug)]
pub struct WebServer {
    guard: Guard,
}

impl WebServer {
    /// Loads the web configuration named by `options` (an error names file, line and column).
    pub fn new(options: &ServeOptions) -> Result<WebServer, WebConfigError> {
        let web = Arc::new(WebState::new(options.web_config_file.clone())?);
        Ok(WebServer {
            guard: Guard {
                web,
                auth: auth::Authenticator::new(options.max_pending_auth_checks),
                enable_lifecycle: options.enable_lifecycle,
                write_paths: &[],
            },
        })
    }

    /// Path prefixes under which even `GET` and `HEAD` change something (the exporter's
    /// `/heartbeat/`, which `curl URL` in a cron job pushes with a GET): with
    /// `basic_auth_scope: write` they need the password whatever their method.
    #[must_use]
    pub fn with_write_paths(mut self, prefixes: &'static [&'static str]) -> WebServer {
        self.guard.write_paths = prefixes;
        self
    }

    /// Whether the web configuration serves TLS now (for `https://` in external URLs).
    pub fn tls_enabled(&self) -> bool {
        self.guard.web.current().tls.is_some()
    }

    /// Serves `router` on `listener` until `shutdown` completes, then lets open
    /// connections finish their requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let guard_state = Arc::new(self.guard);
        let router = router.layer(axum::middleware::from_fn_with_state(
            guard_state.clone(),
            guard,
        ));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let web = guard_state.web.clone();
            let router = router.clone();
            let watcher = graceful.watcher();
            tokio::spawn(connection(stream, web, router, watcher));
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// Serves `router` on `listener` with the web configuration of `options` until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    WebServer::new(options)?
        .serve(listener, router, shutdown)
        .await?;
    Ok(())
}

async fn connection(mut stream: TcpStream, web: Arc<WebState>, router: Router, watcher: Watcher) {
    let service = TowerToHyperService::new(router);
    let tls = web.current().tls.clone();
    let Some(tls) = tls else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        if let Err(err) = watcher.watch(conn).await {
            tracing::debug!(error = %err, "HTTP connection ended with an error");
        }
        return;
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    // A TLS connection starts with a handshake record (content type 22).
    if first[0] != 0x16 {
        let _ = stream.write_all(PLAIN_HTTP_ON_TLS_PORT).await;
        let _ = stream.shutdown().await;
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(stream);
    let result = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        watcher.watch(conn).await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        watcher.watch(conn).await
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "HTTPS connection ended with an error");
    }
}
