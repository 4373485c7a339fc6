//! One of a block's other files, the first byte picking it: `meta.json`, `tombstones`, or
//! a chunk segment whose chunks are all read and decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lookout_promql::storage::fuzzing::block_file(data));
