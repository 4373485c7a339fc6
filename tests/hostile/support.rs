//! What every hostile test shares: a liveness watchdog on `/-/healthy`.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Runs the hostile tests one at a time: each puts a program under a CPU-heavy attack and
/// then asks it to answer within a second, which two attacks at once on a two-core machine
/// would turn into a measure of the machine instead.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Asks `url` (a `/-/healthy` endpoint) every 200 ms on a thread of its own until stopped,
/// and remembers the slowest answer and every failure (no answer within a second counts as
/// one).
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<WatchReport>>,
}

/// What a [`Watchdog`] saw.
#[derive(Debug)]
pub struct WatchReport {
    /// How many times the endpoint was asked.
    pub asked: usize,
    /// The slowest answer.
    pub slowest: Duration,
    /// Each failed ask: how long after the start and why.
    pub failures: Vec<String>,
}

impl Watchdog {
    /// Starts watching `url` (with `auth` as `user:password` for basic auth, when given).
    pub fn start(url: &str, auth: Option<(&str, &str)>) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let url = url.to_string();
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("watchdog runtime");
            rt.block_on(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(1))
                    .no_proxy()
                    .build()
                    .expect("watchdog client");
                let began = Instant::now();
                let mut report = WatchReport {
                    asked: 0,
                    slowest: Duration::ZERO,
                    failures: Vec::new(),
                };
                // Ask at least once, however short the attack: then check the flag.
                loop {
                    let sent = Instant::now();
                    let mut request = client.get(&url);
                    if let Some((u, p)) = &auth {
                        request = request.basic_auth(u, Some(p));
                    }
                    let result = request.send().await;
                    let took = sent.elapsed();
                    report.asked += 1;
                    report.slowest = report.slowest.max(took);
                    match result {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => report.failures.push(format!(
                            "{:.1}s: status {}",
                            began.elapsed().as_secs_f64(),
                            r.status()
                        )),
                        Err(e) => report
                            .failures
                            .push(format!("{:.1}s: {e}", began.elapsed().as_secs_f64())),
                    }
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                }
                report
            })
        });
        Watchdog {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching and panics, naming `what`, if the endpoint ever failed to answer
    /// within a second; returns the report otherwise.
    pub fn finish(mut self, what: &str) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        let report = self
            .handle
            .take()
            .expect("watchdog running")
            .join()
            .expect("watchdog thread");
        assert!(report.asked > 0, "{what}: the watchdog never asked");
        assert!(
            report.failures.is_empty(),
            "{what}: /-/healthy failed while under attack ({} of {} asks): {:?}",
            report.failures.len(),
            report.asked,
            report.failures
        );
        report
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
