//! Who is blocked, since when, until when and why: the daemon's memory across restarts and
//! ruleset reloads. The kernel sets are the enforcement; this is what puts them back.

pub use crate::core::policy::Record;
use ipnet::IpNet;
use std::io::Write;
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

/// Records taken under the lock at a time when saving: the block writer waits for one
/// page at most, never for the file.
#[cfg(not(test))]
const SAVE_PAGE: usize = 1024;
/// Small in tests, so they go through more than one page.
#[cfg(test)]
const SAVE_PAGE: usize = 2;

/// One record per line: compact to write, still readable with `jq` or an editor.
fn write_record(out: &mut impl Write, first: &mut bool, r: &Record) -> std::io::Result<()> {
    out.write_all(if *first { b"\n" } else { b",\n" })?;
    *first = false;
    serde_json::to_writer(&mut *out, r).map_err(std::io::Error::other)
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

    /// Writes records taken earlier.
    pub fn save_records(&self, records: &[Record]) -> Result<(), StateError> {
        let mut rest = Some(records);
        self.save_paged(|_| rest.take().unwrap_or_default().to_vec(), &[])
    }

    /// Writes this host's records a page at a time (`page(after)`: the next records after
    /// the last key written, none at the end), then `fleet`. Nothing holds the whole table
    /// as a copy or as text, so a million records cost a page of memory to save.
    pub fn save_paged(
        &self,
        mut page: impl FnMut(Option<IpNet>) -> Vec<Record>,
        fleet: &[Record],
    ) -> Result<(), StateError> {
        crate::system::files::replace_with(&self.path, 0o600, |f| {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, f);
            out.write_all(b"[")?;
            let mut first = true;
            let mut after = None;
            loop {
                let p = page(after);
                let Some(last) = p.last() else { break };
                after = Some(last.key);
                for r in &p {
                    write_record(&mut out, &mut first, r)?;
                }
            }
            for r in fleet {
                write_record(&mut out, &mut first, r)?;
            }
            out.write_all(b"\n]\n")?;
            out.flush()
        })
        .map_err(|source| StateError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }
}

/// Pages of `SAVE_PAGE` records from the table, each under the lock for its own time.
pub fn pages(
    blocks: &std::sync::Mutex<crate::core::policy::Blocks>,
) -> impl FnMut(Option<IpNet>) -> Vec<Record> + '_ {
    move |after| {
        let page = blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .page(after, SAVE_PAGE);
        page.records()
    }
}

/// What the state writer keeps between saves: the fleet's records as last taken (they are
/// taken whole, only when they change). This host's records are paged from the table at
/// each save, never copied whole.
#[derive(Default)]
pub struct Mirror {
    fleet: Vec<Record>,
}

impl Mirror {
    pub fn set_fleet(&mut self, fleet: Option<Vec<Record>>) {
        if let Some(f) = fleet {
            self.fleet = f;
        }
    }

    pub fn fleet(&self) -> &[Record] {
        &self.fleet
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

    /// The table saved a page at a time (two records a page in tests) reads back whole,
    /// this host's records in key order, then the fleet's.
    #[test]
    fn a_table_saved_page_by_page_reads_back_whole() {
        use crate::core::ignore::IgnoreList;
        use crate::core::policy::{Blocks, PolicyConfig};
        let dir = std::env::temp_dir().join(format!("ps-state-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = StateFile::new(dir.join("blocks.json"));
        let mut book = Blocks::new(
            PolicyConfig {
                timeout: None,
                repeat_factor: 1,
                max_timeout: None,
                max_blocked: 100,
                max_per_second: 100,
            },
            IgnoreList::default(),
        );
        let mine: Vec<Record> = (1..=5)
            .map(|i| rec(&format!("192.0.2.{i}"), 100 + i, None))
            .collect();
        let fleet = Record {
            origin: Origin::Fleet,
            expires: Some(u64::MAX / 2),
            ..rec("198.51.100.0/24", 100, None)
        };
        book.load(mine.clone(), 100);
        let book = std::sync::Mutex::new(book);
        f.save_paged(pages(&book), std::slice::from_ref(&fleet))
            .unwrap();
        let mut want = mine;
        want.push(fleet);
        assert_eq!(f.load().unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
