//! Files a root daemon takes orders from: changeable by root alone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Untrusted(Untrusted),
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: refusing a file that {why} (mode {mode:o}, owner uid {owner})")]
pub struct Untrusted {
    pub path: String,
    pub why: &'static str,
    pub mode: u32,
    pub owner: u32,
}

/// A file a root daemon takes orders from must be changeable by root alone: owned by the
/// user running portsentry (or root), not writable by group or others, in a directory
/// others cannot write to (or could swap the file). Symlinks are followed for the file
/// and checked for the directory they sit in.
pub fn trusted(path: &Path) -> Result<(), FileError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| FileError::Io {
        path: shown.clone(),
        source,
    })?;
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    let unsafe_file = |why, m: &std::fs::Metadata| {
        FileError::Untrusted(Untrusted {
            path: shown.clone(),
            why,
            mode: m.mode() & 0o7777,
            owner: m.uid(),
        })
    };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_file(
            "is not owned by root or the user running portsentry",
            &meta,
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_file("is writable by group or others", &meta));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::metadata(dir) {
        let sticky = d.mode() & 0o1000 != 0;
        if d.mode() & 0o002 != 0 && !sticky {
            return Err(unsafe_file("sits in a directory anyone can write to", &d));
        }
    }
    Ok(())
}
