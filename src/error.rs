//! Errors as operators see them: each one names the file, tier or key at fault.

use std::io;
use std::path::PathBuf;

/// Everything that can stop dfs from starting or a command from completing.
///
/// Inside the filesystem core, per-operation failures are plain errnos
/// (`fs::Errno`); this type is for configuration, startup and commands,
/// where a person reads the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in a dfs.toml, located by file, line and key.
    #[error("{file}:{line}: key `{key}`: {msg}")]
    Config {
        file: PathBuf,
        line: usize,
        key: String,
        msg: String,
    },
    /// A tier that cannot be used, named so the operator knows which.
    #[error("tier `{name}` ({path}): {msg}")]
    Tier {
        name: String,
        path: PathBuf,
        msg: String,
    },
    /// A command-line or validation problem that is not tied to a file line.
    #[error("{0}")]
    Invalid(String),
    /// An I/O failure with what dfs was doing at the time.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with a sentence saying what was being attempted.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for startup and command paths.
pub type Result<T> = std::result::Result<T, Error>;
