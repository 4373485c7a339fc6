//! One large piece of work split across the machine's cores: a query's series (decoding
//! their samples, sliding their windows) or a large answer's bytes (encoding, compressing).
//!
//! The work runs on scoped threads started for it, the first piece on the calling thread,
//! so nothing outlives the call and no pool sits idle between queries; a split is only
//! worth a thread's start (tens of microseconds) for work of a millisecond or more, which
//! callers ensure with their `min` per piece. The pieces are contiguous and their results
//! come back in order, so a split computation gives exactly what the whole one gives.

use std::ops::Range;
use std::sync::{Mutex, OnceLock};

/// The cores work may be split across (`available_parallelism`, read once: it reads the
/// cgroup's CPU quota files each time).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// `0..n` cut into at most `pieces` contiguous ranges (0: one per core) of at least `min`
/// items each, their sizes differing by at most one; one range (or none for `n == 0`)
/// when `n` is under twice `min`.
pub fn split(n: usize, min: usize, pieces: usize) -> Vec<Range<usize>> {
    let most = if pieces == 0 { cores() } else { pieces };
    let count = most.min(n / min.max(1)).max(1);
    if n == 0 {
        return Vec::new();
    }
    let (size, extra) = (n / count, n % count);
    let mut out = Vec::with_capacity(count);
    let mut start = 0;
    for i in 0..count {
        let len = size + usize::from(i < extra);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// [`split`] for callers whose tests force the split: `forced` pieces (at least one item
/// each) when it is not 0, else one per core of at least `min` items.
pub fn shares(n: usize, min: usize, forced: usize) -> Vec<Range<usize>> {
    if forced > 0 {
        split(n, 1, forced)
    } else {
        split(n, min, 0)
    }
}

/// `f` of each piece, in order: the first on the calling thread, each other on a scoped
/// thread of its own, or on the calling thread too when the system refuses a thread (so
/// that a process at its thread limit answers, only slower). A panic in any piece is
/// raised again here once all have ended.
pub fn map<T: Send, R: Send>(pieces: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    map_spawning(pieces, f, true)
}

/// [`map`]; `spawn` false acts as a system that refuses every thread.
fn map_spawning<T: Send, R: Send>(
    pieces: Vec<T>,
    f: impl Fn(T) -> R + Sync,
    spawn: bool,
) -> Vec<R> {
    let slots: Vec<Mutex<Option<T>>> = pieces.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let (slots, f) = (&slots, &f);
    // Each piece is taken out of its slot by whoever runs it, exactly once.
    let run = move |i: usize| {
        let piece = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        piece.map(f)
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..slots.len())
            .map(|i| {
                spawn
                    .then(|| std::thread::Builder::new().spawn_scoped(scope, move || run(i)))
                    .and_then(Result::ok)
            })
            .collect();
        let mut out = Vec::with_capacity(slots.len());
        out.extend(slots.first().and_then(|_| run(0)));
        for (i, handle) in handles.into_iter().enumerate() {
            let result = match handle {
                Some(h) => h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => run(i + 1),
            };
            out.extend(result);
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_everything_in_order_and_at_least_min_each() {
        for n in [0usize, 1, 5, 99, 100, 101, 1000, 1001] {
            for min in [1usize, 10, 100, 1000] {
                for pieces in [1usize, 2, 3, 8] {
                    let r = split(n, min, pieces);
                    let covered: Vec<usize> = r.iter().flat_map(|r| r.clone()).collect();
                    assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} {min} {pieces}");
                    assert!(r.len() <= pieces.max(1));
                    if r.len() > 1 {
                        assert!(r.iter().all(|r| r.len() >= min), "{n} {min} {pieces}");
                        let (lo, hi) = (
                            r.iter().map(|r| r.len()).min(),
                            r.iter().map(|r| r.len()).max(),
                        );
                        assert!(hi.unwrap() - lo.unwrap() <= 1);
                    }
                }
            }
        }
        assert_eq!(split(1000, 100, 4).len(), 4);
        assert_eq!(split(199, 100, 4).len(), 1);
        assert_eq!(shares(5, 100, 3).len(), 3);
        assert_eq!(shares(5, 100, 0).len(), 1);
        assert_eq!(shares(5, usize::MAX, 0), vec![0..5]);
    }

    #[test]
    fn results_come_back_in_order_and_panics_are_raised() {
        let sums = map(split(10_000, 1, 4), |r| r.sum::<usize>());
        assert_eq!(sums.len(), 4);
        assert_eq!(sums.iter().sum::<usize>(), (0..10_000).sum::<usize>());
        assert!(sums.windows(2).all(|w| w[0] < w[1]));
        // Refused threads: the same results, run on the calling thread.
        assert_eq!(
            map_spawning(split(10_000, 1, 4), |r| r.sum::<usize>(), false),
            sums
        );
        assert!(map(Vec::<usize>::new(), |i| i).is_empty());
        let caught = std::panic::catch_unwind(|| {
            map(vec![1, 2, 3], |i| {
                assert_ne!(i, 3, "piece three fails");
                i
            })
        });
        assert!(caught.is_err());
    }
}
