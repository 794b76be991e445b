//! The runs under way on this machine: each holds a shared lock while it uses a cluster.
//!
//! A suite process (`run`, or one case under nextest) holds [`Activity`] from before it touches the
//! cluster until it exits; the lock goes with the process, however it ends (SIGKILL included).
//! What is kept between runs (the local cluster's graph) is parked only while [`idle`] holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dynamo::lock::FileLock;

/// How long a starting run waits for a park in progress to finish.
const PARK_WAIT: Duration = Duration::from_secs(120);

/// Errors taking the activity lock.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The lock file could not be used, or a park held it too long.
    #[error("the runs' activity lock: {0}")]
    Lock(#[from] crate::dynamo::DynamoError),
}

/// `<cache>/runs/active.lock`.
pub fn activity_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("runs").join("active.lock")
}

/// A run under way: held for the process's lifetime.
#[derive(Debug)]
#[must_use = "the run counts as under way only while this is held"]
pub struct Activity {
    _lock: FileLock,
}

impl Activity {
    /// Marks this process as a run under way, waiting at most two minutes for a park in
    /// progress to finish.
    ///
    /// # Errors
    /// [`LedgerError::Lock`] when the lock file cannot be used or the wait runs out.
    pub fn hold(cache_dir: &Path) -> Result<Activity, LedgerError> {
        Ok(Activity {
            _lock: FileLock::shared(&activity_path(cache_dir), PARK_WAIT)?,
        })
    }
}

/// The only lock on the activity file when no run is under way (hold it while parking, so that no
/// run starts meanwhile), else `None`.
///
/// # Errors
/// [`LedgerError::Lock`] when the lock file cannot be used.
pub fn idle(cache_dir: &Path) -> Result<Option<FileLock>, LedgerError> {
    Ok(FileLock::try_exclusive(&activity_path(cache_dir))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_under_way_keeps_the_machine_from_idling_until_it_ends() {
        let cache = tempfile::tempdir().unwrap();
        assert!(idle(cache.path()).unwrap().is_some(), "no run yet");
        let first = Activity::hold(cache.path()).unwrap();
        let second = Activity::hold(cache.path()).unwrap();
        assert!(idle(cache.path()).unwrap().is_none());
        drop(first);
        assert!(idle(cache.path()).unwrap().is_none(), "one run is left");
        drop(second);
        assert!(idle(cache.path()).unwrap().is_some());
    }
}
