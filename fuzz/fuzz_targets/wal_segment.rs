//! One WAL segment file: its page and fragment framing (checksums, snappy) read to the end
//! with every record decoded, then replayed as a whole WAL into an empty storage.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lookout_promql::storage::fuzzing::wal_segment(data));
