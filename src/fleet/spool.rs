//! Alerts waiting for the LAPI: in memory, and on disk in the state directory while the
//! LAPI cannot be reached, so a restart loses none. Bounded in count; the oldest go first
//! when it is full. The file is written atomically (temporary file, fsync, rename).

use super::wire::Pending;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Alerts waiting at most (about 200 bytes each on disk).
pub const MAX_WAITING: usize = 10_000;
/// Largest spool file read back; a bigger one is not ours.
const MAX_FILE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: unreadable ({why}); moved aside to {aside}")]
    Corrupt {
        path: String,
        why: String,
        aside: String,
    },
}

pub struct Spool {
    path: PathBuf,
    waiting: VecDeque<Pending>,
    /// What the file holds differs from `waiting`.
    unsaved: bool,
    /// Alerts given up: the spool was full, or their block ended before they could go.
    pub discarded: u64,
    max: usize,
}

impl Spool {
    /// The spool at `path`, with what an earlier run left there (ended blocks dropped).
    pub fn open(path: PathBuf, now: u64) -> (Spool, Option<SpoolError>) {
        let mut s = Spool {
            path,
            waiting: VecDeque::new(),
            unsaved: false,
            discarded: 0,
            max: MAX_WAITING,
        };
        let err = match s.read() {
            Ok(list) => {
                for p in list {
                    s.push(p, now);
                }
                s.unsaved = false;
                None
            }
            Err(e) => Some(e),
        };
        (s, err)
    }

    #[cfg(test)]
    fn with_max(mut self, max: usize) -> Spool {
        self.max = max;
        self
    }

    fn read(&self) -> Result<Vec<Pending>, SpoolError> {
        let shown = self.path.display().to_string();
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SpoolError::Io {
                    path: shown,
                    source,
                })
            }
        };
        let mut text = Vec::new();
        f.take(MAX_FILE + 1)
            .read_to_end(&mut text)
            .map_err(|source| SpoolError::Io {
                path: shown.clone(),
                source,
            })?;
        let parsed = if text.len() as u64 > MAX_FILE {
            Err("too large".to_string())
        } else {
            serde_json::from_slice::<Vec<Pending>>(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|why| {
            let aside = format!("{shown}.corrupt");
            let _ = std::fs::rename(&self.path, &aside);
            SpoolError::Corrupt {
                path: shown,
                why,
                aside,
            }
        })
    }

    /// Adds an alert; a full spool gives up its oldest.
    pub fn push(&mut self, p: Pending, now: u64) {
        if p.ended(now) {
            self.discarded += 1;
            return;
        }
        while self.waiting.len() >= self.max {
            self.waiting.pop_front();
            self.discarded += 1;
        }
        self.waiting.push_back(p);
        self.unsaved = true;
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The next `n` alerts to send, oldest first; those whose block ended are dropped.
    pub fn batch(&mut self, n: usize, now: u64) -> Vec<Pending> {
        let before = self.waiting.len();
        self.waiting.retain(|p| !p.ended(now));
        if self.waiting.len() != before {
            self.discarded += (before - self.waiting.len()) as u64;
            self.unsaved = true;
        }
        self.waiting.iter().take(n).cloned().collect()
    }

    /// The first `n` alerts were accepted by the LAPI.
    pub fn sent(&mut self, n: usize) {
        self.waiting.drain(..n.min(self.waiting.len()));
        self.unsaved = true;
    }

    /// Writes the file if it is behind (none at all when nothing waits).
    pub fn save(&mut self) -> Result<(), SpoolError> {
        if !self.unsaved {
            return Ok(());
        }
        let err = |source| SpoolError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if self.waiting.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
            self.unsaved = false;
            return Ok(());
        }
        let mut text = Vec::with_capacity(self.waiting.len() * 200 + 4);
        text.extend_from_slice(b"[\n");
        for (i, p) in self.waiting.iter().enumerate() {
            if i > 0 {
                text.extend_from_slice(b",\n");
            }
            serde_json::to_writer(&mut text, p).map_err(|e| err(e.into()))?;
        }
        text.extend_from_slice(b"\n]\n");
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        self.unsaved = false;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(net: &str, at: u64) -> Pending {
        Pending {
            net: net.into(),
            at,
            timeout: Some(3600),
            count: 1,
            proto: "tcp".into(),
            port: 111,
            kind: "syn".into(),
            target: "192.0.2.1".into(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ps-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn alerts_survive_a_restart_with_their_times_and_ended_ones_go() {
        let d = dir("restart");
        let path = d.join("crowdsec-spool.json");
        let (mut s, e) = Spool::open(path.clone(), 1000);
        assert!(e.is_none() && s.is_empty());
        s.push(p("198.18.0.1", 1000), 1000);
        s.push(p("198.18.0.2", 1500), 1500);
        s.save().unwrap();
        assert!(!d.join("crowdsec-spool.tmp").exists());
        // Restarted an hour and a little later: the first block has ended.
        let (mut s, e) = Spool::open(path.clone(), 4700);
        assert!(e.is_none());
        let batch = s.batch(10, 4700);
        assert_eq!(batch, vec![p("198.18.0.2", 1500)]);
        s.sent(1);
        s.save().unwrap();
        assert!(!path.exists(), "an empty spool leaves no file");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_full_spool_gives_up_its_oldest() {
        let d = dir("full");
        let (s, _) = Spool::open(d.join("s.json"), 0);
        let mut s = s.with_max(3);
        for i in 0..5 {
            s.push(p(&format!("198.18.0.{i}"), 100 + i), 100);
        }
        assert_eq!((s.len(), s.discarded), (3, 2));
        assert_eq!(s.batch(1, 100)[0].net, "198.18.0.2");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_or_huge_spool_is_moved_aside() {
        let d = dir("corrupt");
        let path = d.join("s.json");
        std::fs::write(&path, "[{\"net\": 5").unwrap();
        let (s, e) = Spool::open(path.clone(), 0);
        assert!(matches!(e, Some(SpoolError::Corrupt { .. })) && s.is_empty());
        assert!(d.join("s.json.corrupt").exists() && !path.exists());
        std::fs::write(&path, vec![b' '; (MAX_FILE + 10) as usize]).unwrap();
        let (_, e) = Spool::open(path.clone(), 0);
        assert!(matches!(e, Some(SpoolError::Corrupt { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
