//! Who is blocked, since when, until when and why: the daemon's memory across restarts and
//! ruleset reloads. The kernel sets are the enforcement; this is what puts them back.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub addr: IpAddr,
    /// Epoch seconds.
    pub since: u64,
    /// Epoch seconds; `None` = permanent.
    pub expires: Option<u64>,
    /// How many times this address has been blocked (repeat offenders get longer blocks).
    #[serde(default = "one")]
    pub count: u32,
    pub reason: String,
}

fn one() -> u32 {
    1
}

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

#[derive(Debug, Default)]
pub struct BlockState {
    records: HashMap<IpAddr, Record>,
    dirty: bool,
}

impl BlockState {
    pub fn upsert(&mut self, rec: Record) {
        self.records.insert(rec.addr, rec);
        self.dirty = true;
    }

    pub fn remove(&mut self, addr: IpAddr) -> Option<Record> {
        let r = self.records.remove(&addr);
        self.dirty |= r.is_some();
        r
    }

    pub fn get(&self, addr: IpAddr) -> Option<&Record> {
        self.records.get(&addr)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops records that have expired at `now` (epoch seconds).
    pub fn prune(&mut self, now: u64) {
        let before = self.records.len();
        self.records
            .retain(|_, r| r.expires.is_none_or(|e| e > now));
        self.dirty |= self.records.len() != before;
    }

    /// Unexpired records, oldest first.
    pub fn active(&self, now: u64) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .records
            .values()
            .filter(|r| r.expires.is_none_or(|e| e > now))
            .cloned()
            .collect();
        v.sort_by_key(|r| (r.since, r.addr));
        v
    }

    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn to_json(&self, now: u64) -> String {
        records_json(&self.active(now))
    }

    pub fn from_json(text: &str) -> Result<BlockState, serde_json::Error> {
        let list: Vec<Record> = serde_json::from_str(text)?;
        Ok(BlockState {
            records: list.into_iter().map(|r| (r.addr, r)).collect(),
            dirty: false,
        })
    }
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

    /// Loads the state; a missing file is an empty state, a corrupt one is moved aside.
    pub fn load(&self) -> Result<BlockState, StateError> {
        let shown = self.path.display().to_string();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlockState::default()),
            Err(source) => {
                return Err(StateError::Io {
                    path: shown,
                    source,
                })
            }
        };
        BlockState::from_json(&text).map_err(|source| {
            let aside = format!("{shown}.corrupt");
            let _ = std::fs::rename(&self.path, &aside);
            StateError::Corrupt {
                path: shown,
                aside,
                source,
            }
        })
    }

    pub fn save(&self, state: &BlockState, now: u64) -> Result<(), StateError> {
        self.save_records(&state.active(now))
    }

    /// Writes a snapshot taken earlier, so the caller need not hold the state's lock while
    /// the file is written.
    pub fn save_records(&self, records: &[Record]) -> Result<(), StateError> {
        let err = |source| StateError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(records_json(records).as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        // Make the rename itself durable.
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(addr: &str, since: u64, expires: Option<u64>) -> Record {
        Record {
            addr: addr.parse().unwrap(),
            since,
            expires,
            count: 1,
            reason: "TCP SYN/Normal scan to TCP port 111".into(),
        }
    }

    #[test]
    fn round_trips_and_prunes_expired() {
        let mut s = BlockState::default();
        s.upsert(rec("192.0.2.2", 100, Some(200)));
        s.upsert(rec("2001:db8::2", 150, None));
        s.upsert(rec("192.0.2.9", 50, Some(120)));
        let json = s.to_json(130);
        let back = BlockState::from_json(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.active(130)[0].addr.to_string(), "192.0.2.2");
        let mut back = back;
        back.prune(250);
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn file_is_saved_atomically_and_corrupt_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("ps-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(dir.join("blocks.json"));
        assert!(f.load().unwrap().is_empty());
        let mut s = BlockState::default();
        s.upsert(rec("192.0.2.2", 100, None));
        f.save(&s, 100).unwrap();
        assert_eq!(f.load().unwrap().len(), 1);
        assert!(!dir.join("blocks.tmp").exists());
        std::fs::write(f.path(), "[{\"addr\": \"192.0.2.2\", \"sin").unwrap();
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
        assert!(dir.join("blocks.json.corrupt").exists());
        assert!(f.load().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
