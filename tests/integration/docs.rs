//! Documentation and packaging that must not drift from the code.

use crate::lab::run;
use clap::CommandFactory;
use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .to_str()
        .unwrap()
        .to_string()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// (section, key) pairs documented in portsentry.toml(5): `.TP` + `.B key` under `.SS [section]`.
fn documented_keys() -> BTreeSet<(String, String)> {
    let page = read("man/portsentry.toml.5");
    let mut out = BTreeSet::new();
    let mut sections: Vec<String> = Vec::new();
    let mut after_tp = false;
    for line in page.lines() {
        if let Some(head) = line.strip_prefix(".SS ") {
            sections = head
                .split('[')
                .skip(1)
                .filter_map(|s| s.split(']').next())
                .map(str::to_string)
                .collect();
        } else if after_tp {
            if let Some(key) = line.strip_prefix(".B ") {
                for s in &sections {
                    out.insert((s.clone(), key.trim().to_string()));
                }
            }
        }
        after_tp = line == ".TP";
    }
    out
}

#[test]
fn man_pages_are_lint_clean() {
    for page in ["man/portsentry.8", "man/portsentry.toml.5"] {
        let out = run(&["groff", "-man", "-ww", "-z", &repo(page)]);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{page}:\n{warnings}"
        );
    }
}

#[test]
fn every_config_key_is_documented_in_section_5() {
    let documented = documented_keys();
    let mut missing = Vec::new();
    for (section, keys) in portsentry::config::known_keys() {
        for key in keys {
            if !documented.contains(&(section.clone(), key.clone())) {
                missing.push(format!("[{section}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in man/portsentry.toml.5: {missing:?}"
    );
}

#[test]
fn shipped_example_uses_only_known_documented_keys() {
    let known: BTreeSet<(String, String)> = portsentry::config::known_keys()
        .into_iter()
        .flat_map(|(s, keys)| keys.into_iter().map(move |k| (s.clone(), k)))
        .collect();
    let documented = documented_keys();
    let mut section = String::new();
    let mut seen = 0;
    for line in read("packaging/portsentry.toml").lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        // Keys, including the commented-out examples (`#run = [...]`).
        let l = l.strip_prefix('#').unwrap_or(l);
        if let Some((key, _)) = l.split_once(" = ") {
            if key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                let pair = (section.clone(), key.to_string());
                assert!(
                    known.contains(&pair),
                    "example key [{section}] {key} unknown to the code"
                );
                assert!(
                    documented.contains(&pair),
                    "example key [{section}] {key} not in section 5"
                );
                seen += 1;
            }
        }
    }
    // The example shows every key.
    assert_eq!(seen, known.len(), "the example should show every key");
}

#[test]
fn every_command_and_option_is_in_section_8() {
    let page = read("man/portsentry.8").replace("\\-", "-");
    let cli = portsentry::cli::Cli::command();
    let mut missing = Vec::new();
    for arg in cli.get_arguments().filter_map(|a| a.get_long()) {
        if !page.contains(&format!("--{arg}")) {
            missing.push(format!("--{arg}"));
        }
    }
    for sub in cli.get_subcommands() {
        if !page.contains(&format!(".B {}", sub.get_name()))
            && !page.contains(&format!(".BI {} ", sub.get_name()))
        {
            missing.push(sub.get_name().to_string());
        }
        for arg in sub.get_arguments().filter_map(|a| a.get_long()) {
            if !page.contains(&format!("--{arg}")) {
                missing.push(format!("{} --{arg}", sub.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "not in man/portsentry.8: {missing:?}");
}

#[test]
fn systemd_unit_is_hardened_to_at_most_2_5() {
    let out = run(&[
        "systemd-analyze",
        "security",
        "--offline=true",
        "--no-pager",
        &repo("packaging/portsentry.service"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let score: f32 = line
        .split(": ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(score <= 2.5, "{line}");
}

#[test]
fn completions_are_generated_for_common_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&[env!("CARGO_BIN_EXE_portsentry"), "completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("unblock") && text.contains("check-config"),
            "{shell}"
        );
    }
}

#[test]
fn check_config_exits_78_with_file_line_and_caret() {
    let dir = std::env::temp_dir().join(format!("ps-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[tcp]\nmode = \"ports\"\nprots = \"1,2\"\n").unwrap();
    let out = run(&[
        env!("CARGO_BIN_EXE_portsentry"),
        "check-config",
        "-c",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("bad.toml:3:1: unknown field `prots`")
            && err.contains("did you mean `ports`?"),
        "{err}"
    );
    assert!(err.contains("   | prots = \"1,2\"\n   | ^"), "{err}");
    let ok = run(&[
        env!("CARGO_BIN_EXE_portsentry"),
        "check-config",
        "-c",
        &repo("packaging/portsentry.toml"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn import_legacy_output_passes_check_config() {
    let dir = std::env::temp_dir().join(format!("ps-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("portsentry.conf");
    std::fs::write(
        &conf,
        "TCP_PORTS=\"1,11,15,79,111\"\nADVANCED_PORTS_TCP=\"1024\"\nBLOCK_TCP=\"1\"\nSCAN_TRIGGER=\"0\"\n\
         KILL_ROUTE=\"/sbin/route add -host $TARGET$ reject\"\nKILL_RUN_CMD=\"/sbin/iptables -I INPUT -s $TARGET$ -j DROP && true\"\n",
    )
    .unwrap();
    let default = dir.join("default");
    std::fs::write(&default, "TCP_MODE=\"stcp\"\nUDP_MODE=\"audp\"\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_portsentry");
    let out = run(&[
        bin,
        "import-legacy",
        conf.to_str().unwrap(),
        "--default",
        default.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = dir.join("imported.toml");
    std::fs::write(&toml, &out.stdout).unwrap();
    let check = run(&[bin, "check-config", "-c", toml.to_str().unwrap()]);
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        summary.contains("tcp: Ports, 5 ports: 1,11,15,79,111"),
        "{summary}"
    );
    // The iptables DROP is the nft set's job; `true` is found on PATH, as 1.2's shell did.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# KILL_RUN_CMD: \"/sbin/iptables -I INPUT -s $TARGET$ -j DROP\" is not run"),
        "{text}"
    );
    assert!(
        text.contains("# KILL_RUN_CMD: 'true' resolved to /") && text.contains("/true\"]\n"),
        "{text}"
    );
    assert!(summary.contains("actions: run (1 command)"), "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn package_loads_the_modules_the_steering_error_names() {
    use portsentry::firewall::{Steering, MODULES_LOAD_FILE};
    let asset = format!(
        "[\"packaging/portsentry.modules\", \"{}\", \"644\"]",
        MODULES_LOAD_FILE.trim_start_matches('/')
    );
    assert!(
        read("Cargo.toml").contains(&asset),
        "Cargo.toml's deb assets should hold {asset}"
    );
    let listed: Vec<String> = read("packaging/portsentry.modules")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for s in [Steering::Native, Steering::Compat] {
        assert!(listed.iter().any(|m| m == s.module()), "{listed:?}");
    }
    assert!(listed.iter().any(|m| m == "nfnetlink_queue"), "{listed:?}");
}

/// Section 8's list of detected techniques names every kind the daemon alerts on (the
/// match has no wildcard: a new kind does not compile until it is named here), and
/// README's comparison has the nmap scans beyond TCP and UDP ports.
#[test]
fn every_detected_technique_is_in_section_8_and_the_readme() {
    use portsentry::core::probe::{ScanKind, TcpFlags};
    fn named(kind: ScanKind) -> Option<&'static str> {
        Some(match kind {
            ScanKind::Syn => "TCP SYN",
            ScanKind::Fin => "FIN",
            ScanKind::Null => "NULL",
            ScanKind::Xmas => "XMAS",
            ScanKind::Ack => "ACK and\nWindow",
            ScanKind::Maimon => "Maimon",
            ScanKind::Other(_) => "any other flag combination",
            ScanKind::Udp => "UDP",
            ScanKind::SctpInit => "SCTP INIT scan from host",
            ScanKind::SctpCookieEcho => "SCTP COOKIE-ECHO scan from host",
            ScanKind::IpProtocol => "IP protocol scan from host",
            ScanKind::Unreadable => "Unreadable header chain from host",
            // Never alerted: an association's traffic or backscatter.
            ScanKind::SctpOther(_) => return None,
        })
    }
    let page = read("man/portsentry.8").replace("\\-", "-");
    let readme = read("README.md");
    let kinds = [
        ScanKind::Syn,
        ScanKind::Fin,
        ScanKind::Null,
        ScanKind::Xmas,
        ScanKind::Ack,
        ScanKind::Maimon,
        ScanKind::Other(TcpFlags(TcpFlags::SYN | TcpFlags::RST)),
        ScanKind::Udp,
        ScanKind::SctpInit,
        ScanKind::SctpCookieEcho,
        ScanKind::SctpOther(6),
        ScanKind::IpProtocol,
        ScanKind::Unreadable,
    ];
    assert_eq!(kinds.len(), portsentry::core::stats::KINDS.len());
    for kind in kinds {
        if let Some(text) = named(kind) {
            assert!(page.contains(text), "man/portsentry.8 lacks {text:?}");
        }
    }
    for scan in [
        "`nmap -sO`",
        "`-sY`, `-sZ`",
        "URGACKPSHRSTSYNFIN",
        "extension header chains",
    ] {
        assert!(readme.contains(scan), "README lacks {scan:?}");
    }
}

/// No other unit can stop, restart or reload us: firewalld's `Conflicts=nftables.service`
/// stopped portsentry through a `PartOf=nftables.service` (issue 21). Ordering only, after
/// each firewall manager, so at boot our table is in place after theirs.
#[test]
fn systemd_unit_only_orders_itself_after_the_firewall_managers() {
    let unit = read("packaging/portsentry.service");
    let unit_section: Vec<&str> = unit
        .lines()
        .skip_while(|l| *l != "[Unit]")
        .take_while(|l| *l != "[Service]")
        .filter(|l| !l.starts_with('#'))
        .collect();
    for key in [
        "PartOf=",
        "Requires=",
        "Requisite=",
        "BindsTo=",
        "ReloadPropagatedFrom=",
        "Conflicts=",
    ] {
        assert!(
            !unit_section.iter().any(|l| l.starts_with(key)),
            "{key} in {unit_section:?}"
        );
    }
    let after: Vec<&str> = unit_section
        .iter()
        .filter_map(|l| l.strip_prefix("After="))
        .flat_map(|l| l.split_whitespace())
        .collect();
    for manager in [
        "nftables.service",
        "ufw.service",
        "firewalld.service",
        "docker.service",
    ] {
        assert!(
            after.contains(&manager),
            "After= lacks {manager}: {after:?}"
        );
    }
    // The only unit it pulls in is the boot's network-pre point.
    let wants: Vec<&str> = unit_section
        .iter()
        .filter_map(|l| l.strip_prefix("Wants="))
        .collect();
    assert_eq!(wants, ["network-pre.target"]);
}

/// The package's maintainer scripts leave every firewall alone (issue 21): no nft,
/// iptables, ufw, firewalld, Docker or nftables.service in what they run.
/// scripts/firewall-test checks the same on installed hosts.
#[test]
fn maintainer_scripts_touch_no_firewall() {
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let text = read(&format!("packaging/debian/{script}"));
        for line in text.lines().map(|l| l.split('#').next().unwrap_or("")) {
            for word in ["nft", "iptables", "ufw", "firewall", "docker", "nftables"] {
                assert!(
                    !line.contains(word),
                    "packaging/debian/{script} runs {word}: {line}"
                );
            }
        }
    }
}
