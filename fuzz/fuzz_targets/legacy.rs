#![no_main]
//! Any portsentry.conf text: converted or a located error, never a panic; what it
//! converts must be accepted by check-config.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(toml) = portsentry::legacy::import("fuzz.conf", text, None, None) {
            if let Err(e) = portsentry::config::Config::parse("imported.toml", &toml) {
                panic!("import-legacy produced a config check-config rejects: {e}\n{toml}");
            }
        }
    }
});
