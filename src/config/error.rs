//! What goes wrong reading a configuration: every mistake in the file located (path,
//! line, column, the line with a caret), and files refused because others could change them.

use crate::system::files::{self, Untrusted};
use std::fmt;
use std::ops::Range;
use std::path::Path;

/// A configuration error located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Located),
    #[error("{0}: it decides what runs as root and who is never blocked")]
    Unsafe(Untrusted),
    #[error("{path}: {why}")]
    Secret { path: String, why: String },
    #[error("{0}: it holds this host's credentials for the fleet")]
    UnsafeSecret(Untrusted),
}

/// A file others could change, refused.
pub(super) fn trusted(path: &Path) -> Result<(), ConfigError> {
    files::trusted(path).map_err(|e| match e {
        files::FileError::Io { path, source } => ConfigError::Io { path, source },
        files::FileError::Untrusted(u) => ConfigError::Unsafe(u),
    })
}

/// A mistake at its place: shown as `path:line:column: message`, then the line and a
/// caret under the column.
#[derive(Debug)]
pub struct Located {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub line_text: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.column, self.message
        )?;
        writeln!(f, "   | {}", self.line_text)?;
        write!(f, "   | {}^", " ".repeat(self.column.saturating_sub(1)))
    }
}

impl Located {
    pub(super) fn at(
        path: &str,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        Located {
            path: path.to_string(),
            line: text[..start].matches('\n').count() + 1,
            column: text[line_start..start].chars().count() + 1,
            line_text: text[line_start..line_end].to_string(),
            message: message.into(),
        }
    }
}
