//! Reads which firewall managers the host runs (files, systemd units, the ruleset);
//! `core::managers` says what that means.

use crate::core::managers::{self, Seen};
use std::path::Path;
use std::process::{Command, Stdio};

const NFTABLES_CONF: &str = "/etc/nftables.conf";
const UFW_CONF: &str = "/etc/ufw/ufw.conf";
const UNIT_DIR: &str = "/etc/systemd/system";
/// The include's file name, as /etc/nftables.conf names it.
const INCLUDE: &str = "portsentry.nft";

/// Looks at this host. Every source is optional: what cannot be read counts as absent
/// (and an unreadable ruleset is said, `Seen::ruleset_read`).
pub fn look() -> Seen {
    let conf = std::fs::read_to_string(NFTABLES_CONF).unwrap_or_default();
    let ufw = std::fs::read_to_string(UFW_CONF).unwrap_or_default();
    let chains = ruleset_chains();
    let (ufw_chains, docker_chains, firewalld_table) = chains
        .as_ref()
        .map(|c| {
            managers::from_chains(
                c.iter()
                    .map(|(f, t, n)| (f.as_str(), t.as_str(), n.as_str())),
            )
        })
        .unwrap_or_default();
    let unit = |name: &str| enabled(Path::new(UNIT_DIR), name) || active(name);
    Seen {
        ufw_enabled: managers::ufw_conf_enabled(&ufw),
        ufw_chains,
        firewalld_unit: unit("firewalld.service"),
        firewalld_table,
        docker_unit: unit("docker.service"),
        docker_chains,
        nftables_enabled: enabled(Path::new(UNIT_DIR), "nftables.service"),
        nftables_active: active("nftables.service"),
        conf_flushes: managers::conf_flushes_ruleset(&conf),
        conf_includes_us: managers::conf_includes(&conf, INCLUDE),
        ruleset_read: chains.is_some(),
    }
}

/// Enabled: a link to it in one of the `*.wants` or `*.requires` folders `systemctl enable`
/// writes (read from the files, so it works without a running systemd).
pub fn enabled(unit_dir: &Path, unit: &str) -> bool {
    std::fs::read_dir(unit_dir).is_ok_and(|dir| {
        dir.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            (name.ends_with(".wants") || name.ends_with(".requires"))
                && e.path().join(unit).symlink_metadata().is_ok()
        })
    })
}

/// Active now, as systemd says (false without a running systemd).
fn active(unit: &str) -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every chain of the ruleset as (family, table, name), from `nft -j list chains`; None
/// when it cannot be read (no nft, or no CAP_NET_ADMIN).
fn ruleset_chains() -> Option<Vec<(String, String, String)>> {
    let out = Command::new("nft")
        .args(["-j", "list", "chains"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_chains(&out.stdout)
}

/// `nft -j list chains` → (family, table, name) of each chain.
pub fn parse_chains(json: &[u8]) -> Option<Vec<(String, String, String)>> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let items = v.get("nftables")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|i| i.get("chain"))
            .filter_map(|c| {
                let s = |k: &str| c.get(k).and_then(|x| x.as_str()).map(str::to_string);
                Some((s("family")?, s("table")?, s("name")?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "filter", "name": "ufw-user-input", "handle": 9}},
            {"chain": {"family": "inet", "table": "firewalld", "name": "filter_INPUT", "handle": 2,
              "type": "filter", "hook": "input", "prio": 10, "policy": "accept"}}]}"#;
        let c = parse_chains(json).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            ("ip".into(), "filter".into(), "ufw-user-input".into())
        );
        assert_eq!(parse_chains(b"not json"), None);
        assert_eq!(parse_chains(br#"{"nftables": []}"#), Some(vec![]));
    }

    #[test]
    fn enabled_reads_the_wants_links() {
        let dir = std::env::temp_dir().join(format!("ps-units-{}", std::process::id()));
        let wants = dir.join("multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        assert!(!enabled(&dir, "ufw.service"));
        // A dangling link still means enabled: the unit file lives elsewhere.
        std::os::unix::fs::symlink("/lib/systemd/system/ufw.service", wants.join("ufw.service"))
            .unwrap();
        assert!(enabled(&dir, "ufw.service"));
        assert!(!enabled(&dir, "firewalld.service"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
