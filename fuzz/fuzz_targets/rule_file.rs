//! Rule files: YAML decoding, validation (expressions, durations, templates, label names)
//! and the duplicate-rule lint of `lookout rules check`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lookout_evaluator::rules::{check, file};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(f) = file::parse_str(Path::new("fuzz.rules.yml"), text) {
            let _ = f.rule_count();
            let _ = check::find_duplicates(&f.def);
        }
    }
});
