//! Who is blocked, since when, until when and why: the daemon's memory across restarts and
//! ruleset reloads. The kernel sets are the enforcement; this is what puts them back.

pub use crate::core::policy::Record;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a portsentry state file ({source}); moved aside to {aside}")]
    Corrupt {
        path: String,
        aside: String,
        source: serde_json::Error,
    },
}

/// One record per line: compact to write, still readable with `jq` or an editor.
pub fn records_json(records: &[Record]) -> String {
    let mut out = String::with_capacity(records.len() * 128 + 4);
    out.push_str("[\n");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(&serde_json::to_string(r).expect("records serialize"));
    }
    out.push_str("\n]\n");
    out
}

/// The state file, written atomically: a crash leaves the old file or the new one, never a
/// half-written one.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the records; a missing file is none, a corrupt one is moved aside.
    pub fn load(&self) -> Result<Vec<Record>, StateError> {
        let shown = self.path.display().to_string();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    path: shown,
                    source,
                })
            }
        };
        serde_json::from_str::<Vec<Record>>(&text).map_err(|source| {
            let aside = format!("{shown}.corrupt");
            let _ = std::fs::rename(&self.path, &aside);
            StateError::Corrupt {
                path: shown,
                aside,
                source,
            }
        })
    }

    /// Writes a snapshot taken earlier, so the caller need not hold the state's lock while
    /// the file is written.
    pub fn save_records(&self, records: &[Record]) -> Result<(), StateError> {
        crate::system::files::replace(&self.path, records_json(records).as_bytes(), 0o600).map_err(
            |source| StateError::Io {
                path: self.path.display().to_string(),
                source,
            },
        )
    }
}

/// The state writer's own copy of the block records, kept from the policy's journal: a
/// save sorts and writes it with no lock held.
#[derive(Default)]
pub struct Mirror {
    records: std::collections::HashMap<ipnet::IpNet, crate::core::policy::Record>,
    /// The fleet's records as last taken (they are taken whole, only when they change).
    fleet: Vec<crate::core::policy::Record>,
}

impl Mirror {
    pub fn apply(
        &mut self,
        journal: crate::core::policy::Journal,
        fleet: Option<Vec<crate::core::policy::Record>>,
    ) {
        use crate::core::policy::{Change, Journal};
        match journal {
            Journal::Whole(v) => self.records = v.into_iter().map(|r| (r.key, r)).collect(),
            Journal::Changes(changes) => {
                for c in changes {
                    match c {
                        Change::Put(r) => {
                            self.records.insert(r.key, r);
                        }
                        Change::Gone(k) => {
                            self.records.remove(&k);
                        }
                    }
                }
            }
        }
        if let Some(f) = fleet {
            self.fleet = f;
        }
    }

    /// What to save: this host's records oldest first, then the fleet's.
    pub fn records(&self) -> Vec<crate::core::policy::Record> {
        use crate::core::policy::Origin;
        let mut v: Vec<_> = self.records.values().chain(&self.fleet).cloned().collect();
        v.sort_by_key(|r| (r.origin == Origin::Fleet, r.since, r.key));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::Origin;

    fn rec(addr: &str, since: u64, expires: Option<u64>) -> Record {
        Record {
            key: crate::core::ignore::parse_net(addr).unwrap(),
            since,
            expires,
            count: 1,
            reason: "TCP SYN/Normal scan to TCP port 111".into(),
            origin: Origin::Scan,
        }
    }

    #[test]
    fn file_is_saved_atomically_and_corrupt_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("ps-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(dir.join("blocks.json"));
        assert!(f.load().unwrap().is_empty());
        let records = vec![
            rec("192.0.2.2", 100, None),
            rec("2001:db8::/64", 150, Some(200)),
        ];
        f.save_records(&records).unwrap();
        assert_eq!(f.load().unwrap(), records);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "a temporary file was left: {left:?}");
        std::fs::write(f.path(), "[{\"addr\": \"192.0.2.2\", \"sin").unwrap();
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
        assert!(dir.join("blocks.json.corrupt").exists());
        assert!(f.load().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
