//! An in-memory firewall: what the kernel would hold, for unit tests of everything above the
//! seam (heal, restore, unblock, the block policy). Shared through `Arc<Mutex<_>>` so a test
//! can look at it, damage it or make it refuse writes while the daemon's code owns it.

use super::{
    Block, BlockReport, Built, Firewall, FirewallError, Health, Listed, Set, Steering, TableSpec,
};
use crate::core::ports::PortSet;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Table {
    pub blocked: BTreeMap<IpNet, Option<Duration>>,
    /// The fleet sets (fleet4, fleet6).
    pub fleet: BTreeMap<IpNet, Option<Duration>>,
    pub allow: Vec<IpNet>,
    pub watch: (Vec<u16>, Vec<u16>),
    pub steering: Option<Steering>,
    pub log: bool,
}

impl Table {
    pub fn set_mut(&mut self, set: Set) -> &mut BTreeMap<IpNet, Option<Duration>> {
        match set {
            Set::Local => &mut self.blocked,
            Set::Fleet => &mut self.fleet,
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    /// `None`: no table at all.
    pub table: Option<Table>,
    /// What `seal` saw.
    sealed: Option<Table>,
    /// Refuse every block write with this errno (a missing set, a full one).
    pub refuse: Option<i32>,
    /// How often `build` ran.
    pub builds: u32,
    /// Ports marked served (TCP, UDP) and for how long: dynamic sets, which the kernel's
    /// own rules change too, so never part of what is sealed and checked.
    pub served: (BTreeMap<u16, Duration>, BTreeMap<u16, Duration>),
}

#[derive(Clone, Debug, Default)]
pub struct Memory(pub Arc<Mutex<State>>);

impl Memory {
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the table; ENOENT when there is none, as the kernel answers.
    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> Result<R, FirewallError> {
        match self.state().table.as_mut() {
            Some(t) => Ok(f(t)),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT).into()),
        }
    }
}

impl Firewall for Memory {
    fn add_blocks(&mut self, blocks: &[Block]) -> BlockReport {
        let refuse = self.state().refuse;
        let mut report = BlockReport::default();
        for b in blocks {
            let written = match refuse {
                Some(errno) => Err(errno),
                None => self
                    .with(|t| t.set_mut(b.set).insert(b.net, b.timeout))
                    .map(|_| ())
                    .map_err(|_| libc::ENOENT),
            };
            match written {
                Ok(()) => report.written += 1,
                Err(errno) => report
                    .failed
                    .push((b.net, io::Error::from_raw_os_error(errno))),
            }
        }
        report
    }

    fn remove_blocks(&mut self, set: Set, nets: &[IpNet]) -> Result<(), FirewallError> {
        self.with(|t| {
            for n in nets {
                t.set_mut(set).remove(n);
            }
        })
    }

    fn list_blocks(&mut self) -> Result<Vec<Listed>, FirewallError> {
        self.with(|t| {
            let listed = |set, m: &BTreeMap<IpNet, Option<Duration>>| {
                m.iter()
                    .map(|(net, left)| Listed {
                        net: *net,
                        left: *left,
                        set,
                    })
                    .collect::<Vec<_>>()
            };
            let mut v = listed(Set::Local, &t.blocked);
            v.extend(listed(Set::Fleet, &t.fleet));
            v
        })
    }

    fn missing_blocks(&mut self, set: Set, nets: &[IpNet]) -> Result<Vec<IpNet>, FirewallError> {
        self.with(|t| {
            nets.iter()
                .filter(|n| !t.set_mut(set).contains_key(n))
                .copied()
                .collect()
        })
    }

    fn sync_allow(&mut self, nets: &[IpNet]) -> Result<(), FirewallError> {
        self.with(|t| t.allow = nets.to_vec())
    }

    fn sync_watch(&mut self, tcp: &PortSet, udp: &PortSet) -> Result<(), FirewallError> {
        self.with(|t| t.watch = (tcp.iter().collect(), udp.iter().collect()))
    }

    fn note_served(
        &mut self,
        tcp: &PortSet,
        udp: &PortSet,
        grace: Duration,
    ) -> Result<(), FirewallError> {
        self.with(|_| ())?;
        let mut s = self.state();
        s.served.0.extend(tcp.iter().map(|p| (p, grace)));
        s.served.1.extend(udp.iter().map(|p| (p, grace)));
        Ok(())
    }

    fn build(&mut self, spec: &TableSpec) -> Result<Built, FirewallError> {
        let mut s = self.state();
        s.builds += 1;
        let recreated = s.table.is_none();
        let t = s.table.get_or_insert_with(Table::default);
        t.steering = Some(spec.steering.unwrap_or(Steering::Native));
        t.log = spec.log.is_some();
        Ok(Built {
            steering: t.steering.unwrap_or(Steering::Native),
            recreated,
        })
    }

    fn seal(&mut self) -> Result<(), FirewallError> {
        let mut s = self.state();
        // Blocks come and go; the check is about structure, as the kernel's is.
        s.sealed = s.table.clone().map(|t| Table {
            blocked: BTreeMap::new(),
            fleet: BTreeMap::new(),
            ..t
        });
        Ok(())
    }

    fn check(&mut self) -> Result<Health, FirewallError> {
        let s = self.state();
        Ok(match (&s.table, &s.sealed) {
            (None, _) => Health::Missing,
            (Some(t), Some(want))
                if Table {
                    blocked: BTreeMap::new(),
                    fleet: BTreeMap::new(),
                    ..t.clone()
                } == *want =>
            {
                Health::Intact
            }
            (Some(_), _) => Health::Damaged("changed".into()),
        })
    }

    fn remove_steering(&mut self) -> Result<(), FirewallError> {
        self.with(|t| t.steering = None)
    }
}
