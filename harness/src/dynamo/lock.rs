//! Advisory file locks that let several suite processes share one installation or deployment.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::DynamoError;

/// How long a process waits for another to finish installing or starting.
pub const SETUP_WAIT: Duration = Duration::from_secs(900);

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    fn open(path: &Path) -> Result<File, DynamoError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DynamoError::io(parent, e))?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| DynamoError::io(path, e))
    }

    /// Waits at most `timeout` for, then holds, the only lock on `path`.
    pub fn exclusive(path: &Path, timeout: Duration) -> Result<FileLock, DynamoError> {
        Self::acquire(path, timeout, File::try_lock)
    }

    /// Waits at most `timeout` for, then holds, a lock shared with other shared holders.
    pub fn shared(path: &Path, timeout: Duration) -> Result<FileLock, DynamoError> {
        Self::acquire(path, timeout, File::try_lock_shared)
    }

    fn acquire(
        path: &Path,
        timeout: Duration,
        try_lock: fn(&File) -> Result<(), TryLockError>,
    ) -> Result<FileLock, DynamoError> {
        let file = Self::open(path)?;
        let started = Instant::now();
        loop {
            match try_lock(&file) {
                Ok(()) => {
                    return Ok(FileLock {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(DynamoError::io(path, e)),
                Err(TryLockError::WouldBlock) if started.elapsed() >= timeout => {
                    return Err(DynamoError::LockTimeout {
                        path: path.to_path_buf(),
                        waited: timeout,
                    });
                }
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The only lock on `path` if nobody holds any, else `None`.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>, DynamoError> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock {
                file,
                path: path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(DynamoError::io(path, e)),
        }
    }

    /// The locked file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
