//! Files a root daemon takes orders from: changeable by root alone.

use std::fs::{File, OpenOptions};
use std::io::Write;
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
    #[allow(unsafe_code)] // no safe wrapper for geteuid in std
    // SAFETY: geteuid takes nothing, touches no memory and cannot fail.
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

/// Opens `path` to append (`truncate`: to write from empty), creating it with `mode`. The
/// last component is never followed if it is a symlink (one planted by someone who can
/// write to the directory would send root's writes elsewhere), and anything but a regular
/// file is refused (a FIFO would block the writer).
pub fn open_for_writing(path: &Path, truncate: bool, mode: u32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    if truncate {
        o.write(true);
    } else {
        o.append(true);
    }
    let f = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other(format!("{e} (a symlink: refused)"))
        } else {
            e
        }
    })?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file: refused"));
    }
    if truncate {
        f.set_len(0)?;
    }
    Ok(f)
}

/// Replaces `path` with `bytes` atomically (a reader sees the old file or the new one,
/// whole) and durably, with `mode`: a temporary file of a random name in the same
/// directory (created exclusively, so nothing planted is followed), then a rename, which
/// replaces a symlink itself rather than what it points to.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    replace_with(path, mode, |f| f.write_all(bytes))
}

/// `replace`, the contents written by `write` (streamed: no copy of them in memory).
pub fn replace_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".portsentry-")
        .tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `file` is still what `path` names (logrotate moved it away, or removed it).
pub fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ps-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_never_follow_a_planted_symlink() {
        let d = dir();
        let victim = d.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = d.join("history");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = open_for_writing(&link, false, 0o600).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(open_for_writing(&link, true, 0o600).is_err());
        // Replacing swaps the link itself; the victim is untouched.
        replace(&link, b"new\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new\n");
        let mode = std::fs::metadata(&link).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = dir();
        let fifo = d.join("history");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        #[allow(unsafe_code)] // no safe mkfifo in std
        // SAFETY: mkfifo reads a NUL-terminated path that lives through the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        assert!(open_for_writing(&fifo, false, 0o600).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_rotated_file_is_noticed() {
        let d = dir();
        let path = d.join("history");
        let mut f = open_for_writing(&path, false, 0o600).unwrap();
        f.write_all(b"one\n").unwrap();
        assert!(same_file(&f, &path));
        std::fs::rename(&path, d.join("history.1")).unwrap();
        assert!(!same_file(&f, &path));
        let mut s = String::new();
        File::open(d.join("history.1"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "one\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
