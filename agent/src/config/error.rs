//! Configuration errors: each names the file, the line and column when known, and
//! the key path (`peer.address`, `replicated[1].path`), and all of them are
//! reported together so an operator fixes a file in one pass.

use std::{fmt, path::PathBuf};

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// 1-based line of the offending value or key, when known.
    pub line: Option<u64>,
    /// 1-based column (in characters) of the offending value or key, when known.
    pub column: Option<u64>,
    /// The key path, such as `peer.address` or `replicated[0].path`; empty when the
    /// problem concerns the file as a whole.
    pub key: String,
    /// What is wrong, in one lowercase sentence.
    pub message: String,
}

/// Every problem found in a configuration file, in file order where known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl ConfigError ===

impl ConfigError {
    /// A problem with no position in the file (a missing top-level key, an
    /// unreadable file).
    pub(crate) fn unplaced(
        file: PathBuf,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file,
            line: None,
            column: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// === impl ConfigErrors ===

impl ConfigErrors {
    /// The individual problems.
    #[must_use]
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// Sorts by position so the output reads top to bottom; unplaced problems
    /// (missing keys) come first.
    pub(crate) fn sorted(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
        Self(errors)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
