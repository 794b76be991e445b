//! Programs from Debian packages, installed with apt-get when missing and this process is root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{self, Bounds, CommandError};
use crate::dynamo::lock::{FileLock, SETUP_WAIT};

/// A program from a Debian package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    /// The executable's name.
    pub program: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
}

/// Errors finding or installing a package.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// Missing, and this process cannot install it.
    #[error(
        "{packages} not installed (needed by {needed_by}); run: sudo apt-get install -y {packages}"
    )]
    Missing {
        /// The packages, space-separated.
        packages: String,
        /// What needs them.
        needed_by: String,
    },
    /// apt-get failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The install lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::dynamo::DynamoError),
}

/// The path of each program, installing the missing ones with apt-get when running as root
/// (one process at a time, `apt-get update` once if the first attempt fails). `needed_by` names
/// what needs them in the error.
pub fn ensure(
    packages: &[Package],
    cache_dir: &Path,
    needed_by: &str,
) -> Result<Vec<PathBuf>, DebianError> {
    let missing = |all: &[Package]| -> Vec<&'static str> {
        let mut names: Vec<&'static str> = all
            .iter()
            .filter(|p| command::locate(p.program).is_none())
            .map(|p| p.package)
            .collect();
        names.dedup();
        names
    };
    let wanted = missing(packages);
    if !wanted.is_empty() {
        if !command::is_root() || command::locate("apt-get").is_none() {
            return Err(DebianError::Missing {
                packages: wanted.join(" "),
                needed_by: needed_by.to_string(),
            });
        }
        std::fs::create_dir_all(cache_dir).ok();
        let _lock = FileLock::exclusive(&cache_dir.join("apt.lock"), SETUP_WAIT)?;
        let wanted = missing(packages);
        if !wanted.is_empty() {
            eprintln!(
                "dynamo-conformance: installing {} from Debian for {needed_by} (first run on this machine only)",
                wanted.join(", ")
            );
            let install = || {
                command::run(
                    Command::new("apt-get")
                        .args(["install", "-y", "-q", "--no-install-recommends"])
                        .args(&wanted)
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    "apt-get install",
                    Bounds::long(),
                )
            };
            if install().is_err() {
                command::run(
                    Command::new("apt-get").args(["update", "-q"]),
                    "apt-get update",
                    Bounds::long(),
                )?;
                install()?;
            }
        }
    }
    packages
        .iter()
        .map(|p| {
            command::locate(p.program).ok_or_else(|| DebianError::Missing {
                packages: p.package.to_string(),
                needed_by: needed_by.to_string(),
            })
        })
        .collect()
}
