//! Free disk space, checked before the work that fills it (kind's nodes, the images they load).

use std::path::{Path, PathBuf};

/// One gigabyte (10^9 bytes), the unit of every message here (as `df -H` and Docker print).
const GB: f64 = 1e9;

/// Errors checking free space.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Less is free than the work needs.
    #[error(
        "not enough disk to {what}: it needs {} on {path} ({reckoning}), {} is free; free some space on that filesystem{}",
        gb(*need), gb(*free), hint_suffix(hint)
    )]
    Short {
        /// What was about to run.
        what: String,
        /// The filesystem's mount point or a directory on it.
        path: PathBuf,
        /// Bytes it needs.
        need: u64,
        /// How the need was reckoned, e.g. `3 nodes × 2.0 GB`.
        reckoning: String,
        /// Bytes free.
        free: u64,
        /// What else frees space (may be empty).
        hint: &'static str,
    },
    /// The filesystem could not be asked.
    #[error("free space on {path}: {source}")]
    Stat {
        /// The path asked about.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Bytes an unprivileged process may still write on the filesystem holding `path` (`statvfs`'s
/// available blocks × fragment size, as `df`'s Avail column).
///
/// # Errors
/// [`DiskError::Stat`] when `path` does not exist or cannot be asked.
pub fn available(path: &Path) -> Result<u64, DiskError> {
    let stat = rustix::fs::statvfs(path).map_err(|e| DiskError::Stat {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// `bytes` as gigabytes with one decimal, e.g. `6.1 GB`.
pub fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / GB)
}

/// What a piece of work needs on one filesystem, and how that was reckoned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a need does nothing until it is checked"]
pub struct Need {
    /// Bytes.
    pub bytes: u64,
    /// How the bytes were reckoned, for the error, e.g. `3 nodes × 2.0 GB`.
    pub reckoning: String,
}

impl Need {
    /// Fails with [`DiskError::Short`] when less than this need is free on `path`'s filesystem.
    /// `what` names the work (`create the kind cluster`); `hint` says what else frees space.
    ///
    /// # Errors
    /// [`DiskError::Short`], or [`DiskError::Stat`] when the filesystem cannot be asked.
    pub fn check(&self, path: &Path, what: &str, hint: &'static str) -> Result<(), DiskError> {
        let free = available(path)?;
        if free >= self.bytes {
            return Ok(());
        }
        Err(DiskError::Short {
            what: what.to_string(),
            path: path.to_path_buf(),
            need: self.bytes,
            reckoning: self.reckoning.clone(),
            free,
            hint,
        })
    }
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("; {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_above_what_is_free_names_both_and_the_reckoning() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        let need = Need {
            bytes: free + 1_000_000_000_000,
            reckoning: "3 nodes × 2.0 GB".into(),
        };
        let error = need
            .check(
                dir.path(),
                "create the kind cluster",
                "`kind down` removes it",
            )
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("not enough disk to create the kind cluster: it needs "));
        assert!(error.contains("(3 nodes × 2.0 GB)"), "{error}");
        assert!(error.ends_with("; `kind down` removes it"), "{error}");
        Need {
            bytes: 1,
            reckoning: String::new(),
        }
        .check(dir.path(), "write a byte", "")
        .unwrap();
    }

    #[test]
    fn a_missing_path_is_an_error_not_zero() {
        let error = available(Path::new("/nonexistent/dynamo-conformance")).unwrap_err();
        assert!(error.to_string().starts_with("free space on /nonexistent"));
    }

    #[test]
    fn sizes_read_as_gigabytes() {
        assert_eq!(gb(6_140_000_000), "6.1 GB");
        assert_eq!(gb(0), "0.0 GB");
    }
}
