#![no_main]
//! Any configuration text: an error with a location, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = portsentry::config::Config::parse("fuzz.toml", text) {
            let _ = e.to_string();
        }
    }
});
