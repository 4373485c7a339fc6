//! One chunk, the first byte picking its encoding: a block's XOR, histogram or float
//! histogram chunk, the head's XOR or float histogram chunk, or samples to encode. Every
//! sample is decoded; what decodes is encoded again and must decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lookout_promql::storage::fuzzing::chunk(data));
