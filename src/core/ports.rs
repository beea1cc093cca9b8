//! Port lists: PortSentry's `"1,11,15,12345-12346"` syntax and a fixed-size set.

use thiserror::Error;

/// A set of TCP or UDP ports (1–65535) as a 8 KiB bitmap: O(1) lookups, no allocation after
/// construction, ordered iteration.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    bits: Box<[u64; 1024]>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortListError {
    #[error("empty entry in port list (two commas, or a comma at an end)")]
    Empty,
    #[error("'{0}' is not a port number (1-65535)")]
    NotAPort(String),
    #[error("port 0 cannot be watched")]
    Zero,
    #[error("range {0}-{1} is reversed")]
    Reversed(u16, u16),
    #[error("port {0} is listed twice (or in overlapping ranges)")]
    Overlap(u16),
}

impl Default for PortSet {
    fn default() -> Self {
        Self::new()
    }
}

impl PortSet {
    pub fn new() -> Self {
        PortSet {
            bits: Box::new([0; 1024]),
        }
    }

    /// Parses a comma list of ports and `a-b` ranges. Whitespace around entries is allowed;
    /// duplicates are an error because they usually hide a typo.
    pub fn parse(list: &str) -> Result<Self, PortListError> {
        let mut set = PortSet::new();
        if list.trim().is_empty() {
            return Ok(set);
        }
        for entry in list.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(PortListError::Empty);
            }
            let (lo, hi) = match entry.split_once('-') {
                Some((a, b)) => (parse_port(a.trim())?, parse_port(b.trim())?),
                None => {
                    let p = parse_port(entry)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(PortListError::Reversed(lo, hi));
            }
            for p in lo..=hi {
                if !set.insert(p) {
                    return Err(PortListError::Overlap(p));
                }
            }
        }
        Ok(set)
    }

    /// Every port from 1 up to (not including) `below`, as PortSentry's ADVANCED_PORTS_*.
    pub fn below(below: u32) -> Self {
        let mut set = PortSet::new();
        for p in 1..below.min(65536) {
            set.insert(p as u16);
        }
        set
    }

    /// Adds `port`; returns false when it was already present.
    pub fn insert(&mut self, port: u16) -> bool {
        let (w, b) = (usize::from(port) / 64, port % 64);
        let had = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        !had
    }

    pub fn remove(&mut self, port: u16) {
        self.bits[usize::from(port) / 64] &= !(1 << (port % 64));
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(move |p| self.contains(*p))
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortSet({})", compact(self))
    }
}

/// Renders a set back in list syntax with ranges, e.g. `1,11,12345-12346`.
pub fn compact(set: &PortSet) -> String {
    let mut out = String::new();
    let mut run: Option<(u16, u16)> = None;
    let flush = |run: (u16, u16), out: &mut String| {
        if !out.is_empty() {
            out.push(',');
        }
        if run.0 == run.1 {
            out.push_str(&run.0.to_string());
        } else {
            out.push_str(&format!("{}-{}", run.0, run.1));
        }
    };
    for p in set.iter() {
        run = match run {
            Some((a, b)) if b.checked_add(1) == Some(p) => Some((a, p)),
            Some(r) => {
                flush(r, &mut out);
                Some((p, p))
            }
            None => Some((p, p)),
        };
    }
    if let Some(r) = run {
        flush(r, &mut out);
    }
    out
}

fn parse_port(s: &str) -> Result<u16, PortListError> {
    let p: u16 = s
        .parse()
        .map_err(|_| PortListError::NotAPort(s.to_string()))?;
    if p == 0 {
        return Err(PortListError::Zero);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let s = PortSet::parse("1, 11,15,12345-12346").unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![1, 11, 15, 12345, 12346]);
        assert_eq!(compact(&s), "1,11,15,12345-12346");
        assert!(PortSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(PortSet::parse("1,,2"), Err(PortListError::Empty));
        assert_eq!(PortSet::parse("0"), Err(PortListError::Zero));
        assert_eq!(
            PortSet::parse("70000"),
            Err(PortListError::NotAPort("70000".into()))
        );
        assert_eq!(PortSet::parse("9-3"), Err(PortListError::Reversed(9, 3)));
        assert_eq!(PortSet::parse("1-10,5"), Err(PortListError::Overlap(5)));
    }

    #[test]
    fn below_excludes_the_limit_and_zero() {
        let s = PortSet::below(1024);
        assert_eq!(s.len(), 1023);
        assert!(!s.contains(0) && s.contains(1) && s.contains(1023) && !s.contains(1024));
        assert_eq!(PortSet::below(70000).len(), 65535);
    }
}
