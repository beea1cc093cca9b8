#![no_main]
//! Hostile bytes from the queue: parsing and classifying never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = portsentry::core::packet::parse(data) {
        let _ = p.kind.is_scan();
        let _ = portsentry::output::alert::attack_line(&p, "x/x");
    }
});
