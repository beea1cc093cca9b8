//! Every nmap scan type, IPv4 and IPv6: the scanner learns nothing and ends up blocked.

use crate::lab::*;

/// nmap flags and the alert text each scan produces.
const SCANS: &[(&str, &str)] = &[
    ("-sS", "TCP SYN/Normal scan"),
    ("-sT", "TCP SYN/Normal scan"),
    ("-sF", "TCP FIN scan"),
    ("-sN", " TCP NULL scan"),
    ("-sX", "TCP XMAS scan"),
    ("-sA", "TCP ACK/Window scan"),
    ("-sM", "TCP Maimon scan"),
    ("-sW", "TCP ACK/Window scan"),
    ("-sU", "UDP scan"),
];

fn every_scan_type_is_blocked(v6: bool) {
    let mut lab = Lab::new();
    let target = lab.host("target", 1);
    // A service inside the watched range: its port must never count as a probe.
    lab.serve(&target, 80);
    let d = Daemon::start(&lab, &target, "");
    let (set, family) = if v6 {
        ("blocked6", vec!["-6"])
    } else {
        ("blocked4", vec![])
    };
    for (i, (flag, alert)) in SCANS.iter().enumerate() {
        let scanner = lab.host(&format!("s{i}"), 10 + i as u8);
        let src = if v6 {
            scanner.v6.clone()
        } else {
            scanner.v4.clone()
        };
        let mut args = family.clone();
        args.extend([*flag, "-p", "1-40,79-81,111"]);
        let out = nmap(&scanner, &args, if v6 { TARGET6 } else { TARGET4 });
        for (port, state) in nmap_ports(&out) {
            assert!(
                port == 80 || (state != "open" && state != "closed" && state != "unfiltered"),
                "{flag}: watched port {port} answered ({state}):\n{out}"
            );
        }
        let listed = target.nft_set(set);
        assert!(
            listed.contains(&format!("{src} timeout")),
            "{flag}: {src} not in {set}:\n{listed}"
        );
        let line = format!("attackalert: {alert} from host: {src}/{src} to ");
        assert!(
            d.wait_log(&line),
            "{flag}: no line {line:?} in\n{}",
            d.log_text()
        );
    }
    // The service stayed reachable for a host that did not scan.
    let client = lab.host("client", 99);
    assert_eq!(
        client.fetch(if v6 { TARGET6 } else { TARGET4 }, 80).trim(),
        "hello"
    );
    assert!(!target
        .nft_set(set)
        .contains(if v6 { "2001:db8::63" } else { "192.0.2.99" }));
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn every_ipv4_scan_type_is_blocked() {
    every_scan_type_is_blocked(false);
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test runs it"]
fn every_ipv6_scan_type_is_blocked() {
    every_scan_type_is_blocked(true);
}
