//! The host's firewall managers beside our table, and what the administrator should do
//! about each. `system::managers` reads the host (files, units, the ruleset); what that
//! means is decided here, so every case is unit-tested.
//!
//! Facts behind the advice (measured, Debian 12): ufw and Docker write iptables-nft tables
//! (`ip filter`, `ip nat`, …) and firewalld `table inet firewalld`; none of them touches
//! `inet portsentry`, and the daemon carries and heals its own table, so on every host the
//! install path is the same: `systemctl enable --now portsentry`, no nftables.service.
//! Debian's nftables.service loads /etc/nftables.conf, whose stock first line is
//! `flush ruleset`: each start or reload removes every other manager's rules (ours come
//! back within a second; theirs do not), and firewalld's unit `Conflicts=` with it.

/// What was found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// /etc/ufw/ufw.conf says `ENABLED=yes`.
    pub ufw_enabled: bool,
    /// The ruleset holds ufw's chains (`ufw-*`, `ufw6-*`).
    pub ufw_chains: bool,
    /// firewalld.service is active or enabled.
    pub firewalld_unit: bool,
    /// The ruleset holds `table inet firewalld`.
    pub firewalld_table: bool,
    /// docker.service is active or enabled.
    pub docker_unit: bool,
    /// The ruleset holds Docker's chains (`DOCKER`, `DOCKER-USER`, …).
    pub docker_chains: bool,
    /// nftables.service is enabled (starts at boot).
    pub nftables_enabled: bool,
    /// nftables.service is active now.
    pub nftables_active: bool,
    /// /etc/nftables.conf flushes the whole ruleset (`flush ruleset`).
    pub conf_flushes: bool,
    /// /etc/nftables.conf includes portsentry's table.
    pub conf_includes_us: bool,
    /// The ruleset could be read (it needs CAP_NET_ADMIN); without it only files and units
    /// were looked at.
    pub ruleset_read: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Ufw,
    Firewalld,
    Docker,
    Nftables,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Manager::Ufw => "ufw",
            Manager::Firewalld => "firewalld",
            Manager::Docker => "Docker",
            Manager::Nftables => "nftables.service",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing to do; how the two coexist.
    Ok,
    /// Works, with a caveat worth knowing.
    Note,
    /// The host's firewall is at risk: something to change.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub level: Level,
    pub text: String,
}

impl Seen {
    /// The managers found, in a fixed order.
    pub fn managers(&self) -> Vec<Manager> {
        let mut out = Vec::new();
        if self.ufw_enabled || self.ufw_chains {
            out.push(Manager::Ufw);
        }
        if self.firewalld_unit || self.firewalld_table {
            out.push(Manager::Firewalld);
        }
        if self.docker_unit || self.docker_chains {
            out.push(Manager::Docker);
        }
        if self.nftables_enabled || self.nftables_active {
            out.push(Manager::Nftables);
        }
        out
    }
}

const START: &str = "start portsentry on its own: `systemctl enable --now portsentry` \
                     (it puts table inet portsentry in place itself; nftables.service is not needed)";

/// What to tell the administrator about the managers found.
pub fn advise(seen: &Seen) -> Vec<Advice> {
    let ok = |text: String| Advice {
        level: Level::Ok,
        text,
    };
    let note = |text: String| Advice {
        level: Level::Note,
        text,
    };
    let warn = |text: String| Advice {
        level: Level::Warning,
        text,
    };
    let managers = seen.managers();
    let others: Vec<&str> = managers
        .iter()
        .filter(|m| **m != Manager::Nftables)
        .map(|m| m.name())
        .collect();
    let nftables = managers.contains(&Manager::Nftables);
    let mut out = Vec::new();

    if managers.is_empty() {
        out.push(ok(format!("no firewall manager found: {START}")));
    }
    if managers.contains(&Manager::Ufw) {
        out.push(ok(format!(
            "ufw: its rules (iptables-nft tables ip/ip6 filter) and table inet portsentry are \
             separate, and `ufw reload` leaves ours alone; {START}"
        )));
    }
    if managers.contains(&Manager::Firewalld) {
        out.push(ok(format!(
            "firewalld: table inet firewalld and table inet portsentry are separate, and \
             `firewall-cmd --reload` leaves ours alone; {START}"
        )));
    }
    if managers.contains(&Manager::Docker) {
        out.push(ok(format!(
            "Docker: its chains (DOCKER, DOCKER-USER, NAT) and table inet portsentry are \
             separate; a blocked scanner is dropped before Docker's DNAT, so published ports \
             are covered too; {START}"
        )));
    }
    if nftables {
        let state = match (seen.nftables_enabled, seen.nftables_active) {
            (true, true) => "enabled and active",
            (true, false) => "enabled",
            _ => "active",
        };
        if managers.contains(&Manager::Firewalld) {
            out.push(warn(format!(
                "nftables.service is {state} beside firewalld: firewalld's unit conflicts with \
                 it (starting either stops the other){}; disable it and restart firewalld: \
                 `systemctl disable --now nftables && systemctl restart firewalld`",
                if seen.conf_flushes {
                    ", and /etc/nftables.conf's `flush ruleset` removes firewalld's rules"
                } else {
                    ""
                }
            )));
        } else if !others.is_empty() && seen.conf_flushes {
            out.push(warn(format!(
                "nftables.service is {state} beside {}, and /etc/nftables.conf starts with \
                 `flush ruleset`: each start or reload of nftables.service removes {}'s rules \
                 (portsentry puts its own back within a second; theirs stay gone). This is \
                 not portsentry's to fix: disable it (`systemctl disable nftables`; its stop, \
                 too, runs `nft flush ruleset`), or make /etc/nftables.conf delete only its \
                 own tables instead of `flush ruleset` and its ExecStop= likewise (a drop-in)",
                others.join(" and "),
                others.join("'s and ")
            )));
        } else if seen.conf_flushes {
            out.push(note(format!(
                "nftables.service is {state} and /etc/nftables.conf starts with `flush \
                 ruleset`: each reload also empties portsentry's block sets for a moment; the \
                 daemon puts its table and blocks back within a second. To keep them through \
                 reloads, delete only your own tables instead of `flush ruleset`"
            )));
        } else {
            out.push(ok(format!(
                "nftables.service is {state} and /etc/nftables.conf does not flush the whole \
                 ruleset: its reloads leave the other tables alone (Debian's unit still stops \
                 with `nft flush ruleset` unless a drop-in overrides its ExecStop=)"
            )));
        }
    }
    if seen.conf_includes_us && !seen.nftables_enabled {
        out.push(note(
            "/etc/nftables.conf includes portsentry.nft, but nftables.service (the only thing \
             that loads it) is not enabled; the daemon puts its table in place itself"
                .into(),
        ));
    }
    if !seen.ruleset_read {
        out.push(note(
            "the ruleset could not be read (run as root to look at it); this judgement comes \
             from files and units only"
                .into(),
        ));
    }
    out
}

/// Strips a comment and surrounding blanks from an nft or shell-style line.
fn statement(line: &str) -> &str {
    line.split('#').next().unwrap_or("").trim()
}

/// Whether an nftables configuration flushes the whole ruleset (`flush ruleset` as a
/// statement of its own, as Debian's stock /etc/nftables.conf has it).
pub fn conf_flushes_ruleset(text: &str) -> bool {
    text.lines()
        .flat_map(|l| statement(l).split(';'))
        .any(|s| s.split_whitespace().eq(["flush", "ruleset"]))
}

/// Whether an nftables configuration includes a file named `file` (a path's last part).
pub fn conf_includes(text: &str, file: &str) -> bool {
    text.lines().any(|l| {
        let s = statement(l);
        s.strip_prefix("include")
            .map(|rest| rest.trim().trim_matches(|c| c == '"' || c == ';'))
            .is_some_and(|path| path.rsplit('/').next() == Some(file))
    })
}

/// Whether /etc/ufw/ufw.conf enables ufw (`ENABLED=yes`, quotes allowed).
pub fn ufw_conf_enabled(text: &str) -> bool {
    text.lines().any(|l| {
        statement(l)
            .strip_prefix("ENABLED=")
            .is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'') == "yes")
    })
}

/// What the ruleset's chains say: (ufw's, Docker's, firewalld's table). Each chain is
/// (family, table, name).
pub fn from_chains<'a>(
    chains: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> (bool, bool, bool) {
    let (mut ufw, mut docker, mut firewalld) = (false, false, false);
    for (family, table, name) in chains {
        ufw |= name.starts_with("ufw-") || name.starts_with("ufw6-");
        docker |= name == "DOCKER" || name.starts_with("DOCKER-");
        firewalld |= family == "inet" && table == "firewalld";
    }
    (ufw, docker, firewalld)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_STOCK: &str = "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\
        \tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n}\n";

    fn warnings(seen: &Seen) -> Vec<String> {
        advise(seen)
            .into_iter()
            .filter(|a| a.level == Level::Warning)
            .map(|a| a.text)
            .collect()
    }

    fn read() -> Seen {
        Seen {
            ruleset_read: true,
            ..Seen::default()
        }
    }

    #[test]
    fn parses_the_files() {
        assert!(conf_flushes_ruleset(DEBIAN_STOCK));
        assert!(conf_flushes_ruleset("flush ruleset;\n"));
        assert!(conf_flushes_ruleset(
            "table ip t {}\nflush  ruleset # again\n"
        ));
        assert!(!conf_flushes_ruleset(
            "# flush ruleset\nflush table inet filter\n"
        ));
        assert!(!conf_flushes_ruleset(
            "table inet filter\ndelete table inet filter\n"
        ));
        let with = format!("{DEBIAN_STOCK}include \"/usr/share/portsentry/portsentry.nft\"\n");
        assert!(conf_includes(&with, "portsentry.nft"));
        assert!(!conf_includes(DEBIAN_STOCK, "portsentry.nft"));
        assert!(!conf_includes(
            "# include \"/usr/share/portsentry/portsentry.nft\"\n",
            "portsentry.nft"
        ));
        assert!(ufw_conf_enabled("# comment\nENABLED=yes\nLOGLEVEL=low\n"));
        assert!(ufw_conf_enabled("ENABLED=\"yes\"\n"));
        assert!(!ufw_conf_enabled("ENABLED=no\n#ENABLED=yes\n"));
    }

    #[test]
    fn reads_the_chains() {
        assert_eq!(
            from_chains([
                ("ip", "filter", "ufw-user-input"),
                ("ip", "filter", "INPUT")
            ]),
            (true, false, false)
        );
        assert_eq!(
            from_chains([("ip", "filter", "DOCKER-USER"), ("ip", "nat", "DOCKER")]),
            (false, true, false)
        );
        assert_eq!(
            from_chains([("inet", "firewalld", "filter_INPUT")]),
            (false, false, true)
        );
        // Our own table and an administrator's are no manager.
        assert_eq!(
            from_chains([("inet", "portsentry", "input"), ("inet", "filter", "input")]),
            (false, false, false)
        );
    }

    #[test]
    fn no_manager_start_on_its_own() {
        let a = advise(&read());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].level, Level::Ok);
        assert!(a[0].text.starts_with("no firewall manager found"), "{a:?}");
        assert!(a[0].text.contains("systemctl enable --now portsentry"));
    }

    #[test]
    fn each_manager_alone_is_fine() {
        for (seen, name) in [
            (
                Seen {
                    ufw_enabled: true,
                    ..read()
                },
                "ufw",
            ),
            (
                Seen {
                    firewalld_table: true,
                    ..read()
                },
                "firewalld",
            ),
            (
                Seen {
                    docker_chains: true,
                    ..read()
                },
                "Docker",
            ),
        ] {
            let a = advise(&seen);
            assert_eq!(a.len(), 1, "{a:?}");
            assert_eq!(a[0].level, Level::Ok);
            assert!(a[0].text.starts_with(name), "{a:?}");
        }
    }

    #[test]
    fn a_flushing_nftables_service_beside_another_manager_is_a_warning() {
        let seen = Seen {
            ufw_chains: true,
            docker_unit: true,
            nftables_enabled: true,
            conf_flushes: true,
            ..read()
        };
        let w = warnings(&seen);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("beside ufw and Docker"), "{w:?}");
        assert!(w[0].contains("not portsentry's to fix"), "{w:?}");
        assert!(w[0].contains("systemctl disable nftables"), "{w:?}");
        // The same service without `flush ruleset` leaves the others' tables alone.
        let calm = Seen {
            conf_flushes: false,
            ..seen
        };
        assert!(warnings(&calm).is_empty(), "{:?}", advise(&calm));
    }

    #[test]
    fn nftables_service_beside_firewalld_is_always_a_warning() {
        let seen = Seen {
            firewalld_unit: true,
            nftables_enabled: true,
            ..read()
        };
        let w = warnings(&seen);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("conflicts"), "{w:?}");
    }

    #[test]
    fn nftables_service_alone_is_a_note_about_the_flush() {
        let seen = Seen {
            nftables_enabled: true,
            nftables_active: true,
            conf_flushes: true,
            conf_includes_us: true,
            ..read()
        };
        let a = advise(&seen);
        assert!(warnings(&seen).is_empty(), "{a:?}");
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].level, Level::Note);
        assert!(a[0].text.contains("within a second"), "{a:?}");
        assert!(seen.managers() == [Manager::Nftables]);
    }

    #[test]
    fn an_include_nothing_loads_and_an_unread_ruleset_are_said() {
        let seen = Seen {
            conf_includes_us: true,
            ..Seen::default()
        };
        let a = advise(&seen);
        assert!(a.iter().any(|a| a.text.contains("is not enabled")), "{a:?}");
        assert!(a.iter().any(|a| a.text.contains("run as root")), "{a:?}");
    }
}
