//! One block index file: opened (the whole file checked), then every series, label name,
//! label value and postings list read as queries and compaction read them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lookout_promql::storage::fuzzing::block_index(data));
