//! Issue #13, with real processes: `lookout evaluator` scraping a target every 100 ms into
//! a data directory is killed with SIGKILL at random moments (seeded; the seed is printed,
//! `CRASH_SEED=N` replays it) and restarted on the same directory, 20 times. After each
//! restart it must start (the directory's lock died with the process), report its replay
//! (log line and `prometheus_tsdb_data_replay_duration_seconds`), hold every sample the
//! target served more than [`LOSS_WINDOW_MS`] before a kill with its exact value (but for
//! an answer its scrape dropped, each matched by a failed scrape it holds), and hold
//! nothing the target never served.
//!
//! The loss window: the WAL's writer hands pending samples to the operating system every
//! 100 ms (`WalOptions::flush_interval`), and a scrape's samples reach the storage within
//! a few milliseconds of the target answering; a kill loses what was still pending. The
//! remaining 900 ms of the bound are headroom for a debug build on two busy cores (a
//! writer woken late, a scrape answer parsed late). The largest loss seen is printed.

mod common;

use std::time::{Duration, Instant};

use common::crash::{CountingTarget, Evaluator, assert_only_served, now_ms, write_scrape_config};

/// Kills (and restarts) per run.
const KILLS: usize = 20;
/// A sample served this long before a kill must survive it.
const LOSS_WINDOW_MS: i64 = 1000;
/// Scrape interval.
const INTERVAL_MS: u64 = 100;

/// SplitMix64: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms().unsigned_abs())
}

/// Checks the samples a restarted evaluator holds against what the target served and the
/// kills (ms before SIGKILL was sent, ms after the process was reaped); returns how long
/// before the last kill the oldest sample it lost was served (0: none lost) and how many
/// samples of that run were skipped.
///
/// A run's lost samples are of two kinds. Those served after the newest sample it kept are
/// the WAL's pending batch: each must have been served at most [`LOSS_WINDOW_MS`] before
/// the kill. One served before a kept sample of the same run was never appended (the WAL
/// writes in order): its scrape failed after the target answered, as a scrape that runs
/// past its 100 ms timeout on a busy machine does. Such a skip must be matched by a failed
/// scrape held for that run (`up` 0, written before the later kept sample).
async fn check_restart(
    ev: &Evaluator,
    target: &CountingTarget,
    kills: &[(i64, i64)],
) -> (i64, usize) {
    let stored = ev.stored().await;
    // Served after the query, so it holds everything the query may have seen.
    let served = target.served();
    assert_only_served(&stored, &served);
    let failed = ev.failed_scrapes().await;
    let mut oldest_lost = 0;
    let mut skipped_last = 0;
    let mut run_start = i64::MIN;
    for (i, &(kill, reaped)) in kills.iter().enumerate() {
        // The run this kill ended served these (a sample served while the process was
        // dying belongs to it).
        let run: Vec<(i64, f64)> = served
            .iter()
            .copied()
            .filter(|&(t, _)| t > run_start && t <= reaped)
            .collect();
        let newest_kept = run.iter().rposition(|(t, _)| stored.contains_key(t));
        let (kept_part, tail) = run.split_at(newest_kept.map_or(0, |k| k + 1));
        let skipped: Vec<i64> = kept_part
            .iter()
            .filter(|(t, _)| !stored.contains_key(t))
            .map(|&(t, _)| t)
            .collect();
        let failures = failed
            .iter()
            .filter(|&&t| t > run_start && t <= reaped)
            .count();
        assert!(
            skipped.len() <= failures,
            "samples served at {skipped:?} ms are missing between kept ones, but only \
             {failures} failed scrapes are held for the run ended by the kill at {kill} ms"
        );
        for &(t, v) in tail {
            let age = kill - t;
            if i + 1 == kills.len() {
                oldest_lost = oldest_lost.max(age);
            }
            assert!(
                age <= LOSS_WINDOW_MS,
                "sample at {t} ms ({v}), served {age} ms before the kill at {kill} ms, is lost \
                 ({} samples held)",
                stored.len()
            );
        }
        if i + 1 == kills.len() {
            skipped_last = skipped.len();
        }
        run_start = reaped;
    }
    (oldest_lost, skipped_last)
}

/// Asserts that the `starts`th start logged its replay and exposes its duration.
async fn check_replay_reported(ev: &Evaluator, starts: usize) -> f64 {
    let log = ev.process.log();
    let replays = log.matches("WAL replay completed").count();
    assert_eq!(replays, starts, "one replay log line per start:\n{log}");
    let metrics = ev.metrics().await;
    common::sample(
        &metrics,
        "prometheus_tsdb_data_replay_duration_seconds",
        &[],
    )
    .unwrap_or_else(|| panic!("no replay duration in /metrics:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_at_most_the_pending_batch() {
    let seed = seed();
    eprintln!("kill -9 loop: seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let target = CountingTarget::start().await;
    write_scrape_config(dir.path(), target.addr, INTERVAL_MS);
    let port = common::free_port();
    let started = Instant::now();
    let mut kills = Vec::new();
    let (mut worst_loss, mut slowest_replay) = (0, 0.0f64);
    for round in 0..=KILLS {
        let restart = Instant::now();
        let mut ev = Evaluator::start(dir.path(), &data, port).await;
        let ready = restart.elapsed();
        slowest_replay = slowest_replay.max(check_replay_reported(&ev, round + 1).await);
        if round > 0 {
            let (loss, skipped) = check_restart(&ev, &target, &kills).await;
            eprintln!(
                "restart {round}: ready in {ready:?}; oldest lost sample served {loss} ms before \
                 the kill; {skipped} skipped by failed scrapes"
            );
            worst_loss = worst_loss.max(loss);
        }
        if round == KILLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
        let before = now_ms();
        ev.process.kill();
        kills.push((before, now_ms()));
    }
    let served = target.served().len();
    eprintln!(
        "{KILLS} kills in {:?}: {served} samples served; oldest loss {worst_loss} ms before a \
         kill (bound {LOSS_WINDOW_MS} ms); slowest replay {slowest_replay} s",
        started.elapsed()
    );
    assert!(served > KILLS * 2, "too few scrapes to prove anything");
}
