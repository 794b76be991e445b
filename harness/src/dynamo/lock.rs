//! Advisory file locks that let several suite processes share one installation or deployment.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::DynamoError;

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

    /// Waits for, then holds, the only lock on `path`.
    pub fn exclusive(path: &Path) -> Result<FileLock, DynamoError> {
        let file = Self::open(path)?;
        file.lock().map_err(|e| DynamoError::io(path, e))?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Waits for, then holds, a lock shared with other shared holders.
    pub fn shared(path: &Path) -> Result<FileLock, DynamoError> {
        let file = Self::open(path)?;
        file.lock_shared().map_err(|e| DynamoError::io(path, e))?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
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
