//! Pieces shared by the bench binaries (included by path).
#![allow(dead_code)]

/// xorshift64: deterministic data, so every side of a bench sees the same values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A storage on `dir` with its WAL, keeping the bench's data (from 2026-01-01) whatever
/// the date: no retention may drop it.
pub fn open_storage(dir: &str) -> Result<lookout_promql::storage::Storage, String> {
    let opts = lookout_promql::storage::StorageOptions {
        retention: std::time::Duration::from_secs(100 * 365 * 86_400),
        ..lookout_promql::storage::StorageOptions::default()
    };
    let wal = lookout_promql::storage::wal::WalOptions::default();
    lookout_promql::storage::Storage::open(opts, std::path::Path::new(dir), wal)
        .map_err(|e| format!("opening {dir}: {e}"))
}

/// The arguments after the program name, without the flags `cargo bench` passes
/// (`--bench`).
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}
