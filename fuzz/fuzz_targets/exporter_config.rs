//! The exporter's configuration file: decoding, defaults and validation of any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_exporter::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Errors are expected; only panics, hangs and runaway memory are failures.
        let _ = Config::parse(text, "fuzz.yml");
    }
});
