#![no_main]
//! Any portsentry.ignore text: entries or a located error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portsentry::core::ignore::parse_ignore_file("fuzz.ignore", text);
    }
});
