//! The `.test` script language of Prometheus's `promqltest` (load, eval, expect, clear).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_promql::promqltest::parse_script;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_script(text);
    }
});
