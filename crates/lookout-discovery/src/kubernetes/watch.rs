//! LIST then WATCH of one resource (in one namespace or all), as client-go's reflector that
//! Prometheus uses: the LIST (paged, `limit=500`) gives the full set and a
//! `resourceVersion`; the WATCH (`watch=1&resourceVersion=RV&allowWatchBookmarks=true`)
//! streams newline-delimited JSON events. A watch the server ends is resumed from the last
//! `resourceVersion` seen; `410 Gone` (as the watch's HTTP status or as an `ERROR` event)
//! means that version is too old, and the resource is listed again (at once when an event
//! came since the last LIST, else after the back-off); any other failure is counted in
//! `prometheus_sd_kubernetes_failures_total` and listed again after a back-off (1 s
//! doubling to 30 s, see [`run`]). What was listed before stays until a new LIST succeeds.
//!
//! Bounds: each LIST page and each watch event line is at most
//! [`DiscoveryOptions::max_http_bytes`] (a longer line is an error, never buffered whole);
//! a LIST with more than [`DiscoveryOptions::max_targets_per_source`] objects is an error;
//! JSON nesting is limited by `serde_json`'s recursion limit. A LIST, and a WATCH's
//! response head together with the body of a failed WATCH, must come within
//! [`DiscoveryOptions::http_timeout`]; a watch stream silent for longer than it asked for
//! (plus that timeout) is given up.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Kind;
use super::client::Settings;
use super::types::{List, Object, Status};
use crate::{DiscoveryOptions, read_body};

/// How long the server is asked to keep a watch open (`timeoutSeconds`); a watch silent for
/// this plus the HTTP timeout is given up and resumed.
const WATCH_SECONDS: u64 = 300;
/// Objects per LIST page.
const PAGE: usize = 500;
/// Back-off after a failure: first and largest.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a watcher tells the provider.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A successful LIST: these are all the objects of `kind` in `namespace` (all: `None`).
    Reset {
        kind: Kind,
        namespace: Option<String>,
        items: Vec<Object>,
    },
    /// An object was added or modified.
    Put(Kind, Box<Object>),
    /// An object was deleted (its key).
    Delete(Kind, String),
}

/// The API server and how to talk to it.
#[derive(Clone)]
pub(crate) struct Api {
    /// `scheme://host:port` plus any path prefix, without a trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub options: DiscoveryOptions,
}

/// One resource to list and watch.
#[derive(Clone, Debug)]
pub(crate) struct Watch {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub label: Option<String>,
    pub field: Option<String>,
}

/// Most LIST pages read for a source of at most `max_objects` objects: four times what
/// full pages would need, at least 100.
pub(crate) fn max_pages(max_objects: usize) -> usize {
    (max_objects.div_ceil(PAGE) * 4).max(100)
}

/// How a watch ended, when not with an event to apply.
enum End {
    /// The server closed it: resume from the last version.
    Closed,
    /// The version is too old (410): list again.
    Gone,
    /// A failure: count it, back off, list again.
    Failed(String),
}

impl Api {
    fn request(
        &self,
        w: &Watch,
        extra: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = format!("{}{}", self.base, w.kind.path(w.namespace.as_deref()));
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(l) = &w.label {
            q.push(("labelSelector", l.clone()));
        }
        if let Some(f) = &w.field {
            q.push(("fieldSelector", f.clone()));
        }
        q.extend(extra.iter().cloned());
        let req = self
            .client
            .get(url)
            .header("Accept", "application/json")
            .query(&q);
        self.settings.authorize(req)
    }

    /// The message of a failed response: its `Status` message when it has one.
    async fn failure(resp: reqwest::Response, max: u64) -> String {
        let code = resp.status();
        let body = read_body(resp, max).await.unwrap_or_default();
        let msg = serde_json::from_slice::<Status>(&body)
            .map(|s| s.message)
            .unwrap_or_default();
        format!("server returned HTTP status {code} {msg}")
            .trim_end()
            .to_string()
    }

    /// One LIST page: its objects, the list's version and the continue token.
    async fn list_page(
        &self,
        w: &Watch,
        cont: &str,
    ) -> Result<(Vec<Object>, String, String), String> {
        let mut extra = vec![("limit", PAGE.to_string())];
        if !cont.is_empty() {
            extra.push(("continue", cont.to_string()));
        }
        let req = self.request(w, &extra)?;
        let t = self.options.http_timeout;
        let max = self.options.max_http_bytes;
        let work = async {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            if resp.status() != reqwest::StatusCode::OK {
                return Err(Self::failure(resp, max).await);
            }
            read_body(resp, max).await
        };
        let body = tokio::time::timeout(t, work)
            .await
            .map_err(|_| format!("no complete LIST response within {t:?}"))??;
        let list: List<Value> = serde_json::from_slice(&body).map_err(|e| format!("LIST: {e}"))?;
        let items = list
            .items
            .into_iter()
            .map(|v| w.kind.parse(v))
            .collect::<Result<_, _>>()?;
        Ok((items, list.metadata.resource_version, list.metadata.cont))
    }

    /// The full LIST (all pages) and its version. A server may answer a page with fewer
    /// objects than asked (selectors filter after paging), even none, so pages are bounded
    /// by their number too: at most [`max_pages`] for the object limit, else a server that
    /// keeps sending empty pages with a continue token would hold the LIST forever.
    pub(crate) async fn list(&self, w: &Watch) -> Result<(Vec<Object>, String), String> {
        let mut all = Vec::new();
        let mut cont = String::new();
        let limit = max_pages(self.options.max_targets_per_source);
        for _ in 0..limit {
            let (items, rv, next) = self.list_page(w, &cont).await?;
            all.extend(items);
            if all.len() > self.options.max_targets_per_source {
                return Err(format!(
                    "more than the limit of {} objects per source",
                    self.options.max_targets_per_source
                ));
            }
            if next.is_empty() {
                return Ok((all, rv));
            }
            cont = next;
        }
        Err(format!("LIST not complete after {limit} pages"))
    }

    /// Watches from `rv` until the watch ends; sends each change, keeps `rv` current, and
    /// sets `got` when an event (a bookmark too) arrived.
    async fn watch(
        &self,
        w: &Watch,
        rv: &mut String,
        tx: &mpsc::Sender<Msg>,
        got: &mut bool,
    ) -> End {
        let extra = [
            ("watch", "1".to_string()),
            ("resourceVersion", rv.clone()),
            ("allowWatchBookmarks", "true".to_string()),
            ("timeoutSeconds", WATCH_SECONDS.to_string()),
        ];
        let req = match self.request(w, &extra) {
            Ok(r) => r,
            Err(e) => return End::Failed(e),
        };
        let max = self.options.max_http_bytes;
        let t = self.options.http_timeout;
        // One deadline for the response and, when it is a failure, its body: a server
        // that answers an error and then stalls its body cannot hold the watch.
        let deadline = tokio::time::Instant::now() + t;
        let resp = match tokio::time::timeout_at(deadline, req.send()).await {
            Err(_) => return End::Failed(format!("no WATCH response within {t:?}")),
            Ok(Err(e)) => return End::Failed(e.to_string()),
            Ok(Ok(r)) => r,
        };
        if resp.status() == reqwest::StatusCode::GONE {
            return End::Gone;
        }
        if resp.status() != reqwest::StatusCode::OK {
            let code = resp.status();
            return End::Failed(
                match tokio::time::timeout_at(deadline, Self::failure(resp, max)).await {
                    Ok(msg) => msg,
                    Err(_) => format!(
                        "server returned HTTP status {code} and no complete body within {t:?}"
                    ),
                },
            );
        }
        let idle = Duration::from_secs(WATCH_SECONDS) + t;
        let mut lines = Lines::new(resp, max as usize, idle);
        loop {
            let line = match lines.next().await {
                Ok(Some(l)) => l,
                Ok(None) => return End::Closed,
                Err(e) => return End::Failed(e),
            };
            match event(w.kind, &line, rv) {
                Ok(Some(msg)) => {
                    *got = true;
                    if tx.send(msg).await.is_err() {
                        return End::Closed;
                    }
                }
                Ok(None) => *got = true,
                Err(end) => return end,
            }
        }
    }
}

/// A buffer that splits a byte stream into lines, each at most `max` bytes besides its
/// newline. Lines are taken from a cursor; what is left is moved to the front once per
/// chunk added, never once per line (a chunk of many short lines costs its length, not its
/// length times its line count), and bytes are searched for a newline only once.
struct LineBuf {
    buf: Vec<u8>,
    /// Where the next line begins.
    start: usize,
    /// How many bytes from `start` on hold no newline.
    scanned: usize,
    max: usize,
}

impl LineBuf {
    fn new(max: usize) -> Self {
        LineBuf {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
        }
    }

    /// The next non-blank line the buffer holds whole (with its newline), if any; an error
    /// when a line, whole or not yet, is longer than the limit.
    fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let from = self.start + self.scanned;
            let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len() - self.start;
                if self.scanned > self.max {
                    return Err(self.too_long());
                }
                return Ok(None);
            };
            let end = from + i + 1;
            let line = &self.buf[self.start..end];
            self.start = end;
            self.scanned = 0;
            if line.len() > self.max + 1 {
                return Err(self.too_long());
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line.to_vec()));
            }
        }
    }

    /// Adds a chunk, first dropping the lines already taken.
    fn push(&mut self, chunk: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(chunk);
    }

    /// What is left after the last newline, at the end of the stream, unless blank.
    fn rest(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }

    fn too_long(&self) -> String {
        format!("watch event larger than the {}-byte limit", self.max)
    }
}

/// The lines of a streamed body, each at most `max` bytes.
struct Lines {
    resp: reqwest::Response,
    buf: LineBuf,
    idle: Duration,
    done: bool,
}

impl Lines {
    fn new(resp: reqwest::Response, max: usize, idle: Duration) -> Self {
        Lines {
            resp,
            buf: LineBuf::new(max),
            idle,
            done: false,
        }
    }

    /// The next non-empty line; `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(line) = self.buf.line()? {
                return Ok(Some(line));
            }
            if self.done {
                return Ok(self.buf.rest());
            }
            match tokio::time::timeout(self.idle, self.resp.chunk()).await {
                Err(_) => self.done = true,
                Ok(Err(e)) => return Err(format!("reading the watch: {e}")),
                Ok(Ok(None)) => self.done = true,
                Ok(Ok(Some(c))) => self.buf.push(&c),
            }
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: Value,
}

/// Decodes one watch event line: the change to send, if any; updates `rv`.
fn event(kind: Kind, line: &[u8], rv: &mut String) -> Result<Option<Msg>, End> {
    let e: RawEvent =
        serde_json::from_slice(line).map_err(|e| End::Failed(format!("watch event: {e}")))?;
    let version = |o: &Value| {
        o.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match e.kind.as_str() {
        "ADDED" | "MODIFIED" | "DELETED" => {
            let obj = kind.parse(e.object).map_err(End::Failed)?;
            let v = &obj.meta().resource_version;
            if !v.is_empty() {
                rv.clone_from(v);
            }
            Ok(Some(if e.kind == "DELETED" {
                Msg::Delete(kind, obj.key())
            } else {
                Msg::Put(kind, Box::new(obj))
            }))
        }
        "BOOKMARK" => {
            let v = version(&e.object);
            if !v.is_empty() {
                *rv = v;
            }
            Ok(None)
        }
        "ERROR" => {
            let s: Status = serde_json::from_value(e.object).unwrap_or_default();
            if s.code == 410 {
                Err(End::Gone)
            } else {
                Err(End::Failed(format!(
                    "watch error {}: {}",
                    s.code, s.message
                )))
            }
        }
        other => Err(End::Failed(format!("unknown watch event type {other:?}"))),
    }
}

/// The wait before asking again after a failure or a watch that brought nothing: 1 s
/// doubling to 30 s, back to 1 s once a watch brings an event.
struct Backoff(Duration);

impl Backoff {
    /// The wait now; the next one is twice as long, up to [`BACKOFF_MAX`].
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (d * 2).min(BACKOFF_MAX);
        d
    }

    async fn sleep(&mut self) {
        tokio::time::sleep(self.next()).await;
    }
}

/// Lists and watches `w` until the receiver is gone. The back-off is reset only by a watch
/// that brought an event or stayed open [`BACKOFF_MAX`] at least; a watch that ends at once
/// with nothing, and a 410 with no event since the LIST, wait for it (without counting a
/// failure), so that a server answering every request that way is not asked in a loop.
pub(crate) async fn run(api: Api, w: Watch, tx: mpsc::Sender<Msg>, failures: Counter) {
    let mut backoff = Backoff(BACKOFF_MIN);
    let fail = |e: &str| {
        failures.inc();
        tracing::error!(resource = w.kind.resource(), namespace = ?w.namespace, error = %e,
            "Kubernetes service discovery failed; keeping the last good targets");
    };
    loop {
        let mut rv = match api.list(&w).await {
            Ok((items, rv)) => {
                let msg = Msg::Reset {
                    kind: w.kind,
                    namespace: w.namespace.clone(),
                    items,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                rv
            }
            Err(e) => {
                fail(&e);
                backoff.sleep().await;
                continue;
            }
        };
        // Whether a watch since the LIST brought something.
        let mut progress = false;
        loop {
            let started = tokio::time::Instant::now();
            let mut got = false;
            let end = api.watch(&w, &mut rv, &tx, &mut got).await;
            let alive = got || started.elapsed() >= BACKOFF_MAX;
            if alive {
                progress = true;
                backoff = Backoff(BACKOFF_MIN);
            }
            match end {
                End::Closed if tx.is_closed() => return,
                End::Closed if alive => {
                    // A server that ends every watch soon is not asked in a tight loop.
                    if started.elapsed() < Duration::from_millis(200) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                End::Closed => backoff.sleep().await,
                End::Gone => {
                    tracing::info!(
                        resource = w.kind.resource(),
                        "watch version too old; listing again"
                    );
                    if !progress {
                        backoff.sleep().await;
                    }
                    break;
                }
                End::Failed(e) => {
                    fail(&e);
                    backoff.sleep().await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One chunk of many short lines is split in one pass (taking each line from the front
    /// of the buffer would move the rest once per line: some 400 GB copied for this 4 MB
    /// chunk).
    #[test]
    fn many_lines_in_one_chunk() {
        const N: usize = 200_000;
        let line = b"{\"type\":\"BOOKMARK\"}\n";
        let mut chunk = Vec::with_capacity(N * (line.len() + 1));
        for i in 0..N {
            chunk.extend_from_slice(line);
            if i % 1000 == 0 {
                chunk.extend_from_slice(b" \r\n");
            }
        }
        let mut b = LineBuf::new(64);
        b.push(&chunk);
        let mut n = 0;
        while let Some(l) = b.line().unwrap() {
            assert_eq!(l, line);
            n += 1;
        }
        assert_eq!(n, N);
        assert_eq!(b.rest(), None);
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let mut b = Backoff(BACKOFF_MIN);
        let waits: Vec<u64> = (0..7).map(|_| b.next().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn lines_across_chunks_and_the_cap() {
        let mut b = LineBuf::new(8);
        b.push(b"ab\n\ncd");
        assert_eq!(b.line().unwrap().as_deref(), Some(&b"ab\n"[..]));
        assert_eq!(b.line().unwrap(), None);
        b.push(b"ef\ngh");
        assert_eq!(b.line().unwrap().as_deref(), Some(&b"cdef\n"[..]));
        assert_eq!(b.line().unwrap(), None);
        assert_eq!(b.rest().as_deref(), Some(&b"gh"[..]));
        // Eight bytes and a newline is a line; nine, whole or not yet, is too long.
        b.push(b"12345678\n");
        assert_eq!(b.line().unwrap().as_deref(), Some(&b"12345678\n"[..]));
        b.push(b"123456789\n");
        assert!(b.line().unwrap_err().contains("8-byte limit"));
        let mut b = LineBuf::new(8);
        b.push(b"1234");
        assert_eq!(b.line().unwrap(), None);
        b.push(b"56789");
        assert!(b.line().unwrap_err().contains("8-byte limit"));
    }
}
