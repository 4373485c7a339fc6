//! The protobuf exposition reader of the evaluator's scrapes, with its histogram options
//! (custom-bucket conversion included).
//!
//! Besides the raw input (a delimited body), an input starting with 0xFD is taken as the
//! contents of one `MetricFamily` message and given its length prefix here, so that the
//! fuzzer spends its time inside the messages rather than on the framing. Every histogram
//! read must pass the storage's validation, and every sample's labels must build or give an
//! error.
#![no_main]

use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use lookout_evaluator::scrape::protobuf::{self, Options, ProtoError, Value};

fn read(body: &[u8]) {
    for (native_histograms, always_classic, nhcb) in [
        (false, false, false),
        (true, false, false),
        (true, true, false),
        (false, false, true),
        (true, true, true),
    ] {
        let opts = Options {
            native_histograms,
            always_classic,
            nhcb,
        };
        let mut seen = 0usize;
        let counted = protobuf::for_each_sample(body, opts, &AtomicBool::new(false), |s| {
            seen += 1;
            let _ = s.labels();
            assert!(!s.series.is_empty());
            if let Value::Histogram(h) = &s.value {
                assert!(
                    native_histograms || nhcb,
                    "a histogram with native histograms and nhcb off"
                );
                if let Err(e) = h.validate() {
                    panic!("an invalid histogram was read: {e}: {h:?}");
                }
            }
            Ok::<(), ProtoError>(())
        });
        if let Ok(n) = counted {
            assert_eq!(n, seen);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xFD, family)) => {
            let mut body = Vec::with_capacity(family.len() + 10);
            lookout_promql::protowire::put_varint(&mut body, family.len() as u64);
            body.extend_from_slice(family);
            read(&body);
        }
        _ => read(data),
    }
});
