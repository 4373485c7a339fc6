//! One WAL record (series, samples, tombstones, histogram samples of every kind, custom
//! buckets included) decoded as replay decodes it; the series and samples records it reads
//! are encoded again and must decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lookout_promql::storage::fuzzing::wal_record(data));
