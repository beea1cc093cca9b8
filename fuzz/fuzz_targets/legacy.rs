#![no_main]
//! Any portsentry.conf and /etc/default/portsentry text: converted or a located error,
//! never a panic; what it converts must be accepted by check-config.
use libfuzzer_sys::fuzz_target;

/// Half the names are "installed", so both the resolved and the missing paths are taken.
fn which(name: &str) -> Option<String> {
    (name.len() % 2 == 0).then(|| format!("/usr/bin/{name}"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // The first line, when it starts with '@', plays /etc/default/portsentry.
        let (default, conf) = match text.strip_prefix('@').and_then(|t| t.split_once('\n')) {
            Some((d, c)) => (Some(("default", d)), c),
            None => (None, text),
        };
        if let Ok(toml) = portsentry::config::legacy::import("fuzz.conf", conf, default, None, &which) {
            if let Err(e) = portsentry::config::Config::parse("imported.toml", &toml) {
                panic!("import-legacy produced a config check-config rejects: {e}\n{toml}");
            }
        }
    }
});
