//! Installs a Dynamo release from PyPI into a cached virtual environment, once per machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::DynamoError;
use super::lock::FileLock;
use crate::release::DynamoVersion;

/// A virtual environment holding one Dynamo release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonEnv {
    /// The environment's root.
    pub root: PathBuf,
    /// The release it holds.
    pub version: DynamoVersion,
}

impl PythonEnv {
    /// The environment's Python interpreter.
    pub fn python(&self) -> PathBuf {
        self.root.join("bin").join("python")
    }

    /// The environment's `bin` directory, to put first on `PATH`.
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }
}

/// Hex SHA-256 of `parts`, in order.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The environment for `version` under `cache_dir`, created and filled on first use.
/// Safe to call from several processes at once: the first installs, the others wait.
pub fn ensure_env(cache_dir: &Path, version: DynamoVersion) -> Result<PythonEnv, DynamoError> {
    let home = cache_dir.join("dynamo").join(version.to_string());
    let root = ensure_venv(
        &home,
        &version.requirements(),
        "import dynamo.frontend, dynamo.mocker, tokenizers",
        &format!("Dynamo {version}"),
        || {
            if version.borrows_profile() {
                published(version)?;
            }
            Ok(())
        },
    )?;
    Ok(PythonEnv { root, version })
}

/// The virtual environment `<home>/venv` holding exactly `requirements` (a pinned set, installed
/// with `--no-deps`), created on first use and checked by running `import` in it; `before` runs
/// once before a fresh install. `what` names it in progress and errors ("Dynamo 1.6.1").
/// Safe to call from several processes at once: the first installs, the others wait.
///
/// # Errors
/// [`DynamoError::Command`] naming the step that failed (venv, pip, import) with its output's
/// tail; [`DynamoError::LockTimeout`] when another process's install holds the lock too long.
pub(crate) fn ensure_venv(
    home: &Path,
    requirements: &str,
    import: &str,
    what: &str,
    before: impl FnOnce() -> Result<(), DynamoError>,
) -> Result<PathBuf, DynamoError> {
    let key = digest(&[requirements.as_bytes()]);
    let root = home.join("venv");
    let marker = root.join(format!(".installed-{}", &key[..16]));
    if marker.exists() {
        return Ok(root);
    }
    std::fs::create_dir_all(home).map_err(|e| DynamoError::io(home, e))?;
    let _lock = FileLock::exclusive(&home.join("install.lock"), super::lock::SETUP_WAIT)?;
    if marker.exists() {
        return Ok(root);
    }
    eprintln!(
        "dynamo-conformance: installing {what} from PyPI into {} (first run on this machine only)",
        root.display()
    );
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| DynamoError::io(&root, e))?;
    }
    before()?;
    let python = find_python()?;
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&root),
        "create the virtual environment",
    )?;
    let requirements_file = home.join("requirements.txt");
    std::fs::write(&requirements_file, requirements)
        .map_err(|e| DynamoError::io(&requirements_file, e))?;
    let venv_python = root.join("bin").join("python");
    run(
        Command::new(&venv_python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "-r",
            ])
            .arg(&requirements_file),
        &format!("install {what} with pip"),
    )?;
    run(
        Command::new(&venv_python).args(["-c", import]),
        &format!("import {what}"),
    )?;
    std::fs::write(&marker, key).map_err(|e| DynamoError::io(&marker, e))?;
    Ok(root)
}

/// Checks that `version` of `ai-dynamo` is on the package index pip uses (PyPI unless pip is
/// configured otherwise), with `pip index versions`.
///
/// # Errors
/// [`DynamoError::NotPublished`] naming the newest releases there; [`DynamoError::Command`] when
/// pip cannot ask the index.
pub fn published(version: DynamoVersion) -> Result<(), DynamoError> {
    let output = Command::new(find_python()?)
        .args(["-m", "pip", "index", "versions", "ai-dynamo"])
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .map_err(|e| DynamoError::Command {
            what: "ask the package index for ai-dynamo's releases (pip index versions)".into(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(listed) = available_versions(&text) else {
        return Err(DynamoError::Command {
            what: "ask the package index for ai-dynamo's releases (pip index versions)".into(),
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    };
    if listed.iter().any(|v| *v == version.to_string()) {
        return Ok(());
    }
    Err(DynamoError::NotPublished {
        version: version.to_string(),
        published: format!(
            "{}, …",
            listed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The versions of `pip index versions` output's `Available versions:` line, newest first.
fn available_versions(text: &str) -> Option<Vec<String>> {
    text.lines()
        .find_map(|line| line.strip_prefix("Available versions:"))
        .map(|list| list.split(',').map(|v| v.trim().to_string()).collect())
}

/// A Python 3.10+ interpreter on `PATH`.
fn find_python() -> Result<PathBuf, DynamoError> {
    for name in ["python3.11", "python3.12", "python3.10", "python3"] {
        let ok = Command::new(name)
            .args([
                "-c",
                "import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(PathBuf::from(name));
        }
    }
    Err(DynamoError::Missing {
        what: "Python 3.10 or newer with the venv module".into(),
        hint: "install python3 and python3-venv".into(),
    })
}

/// Runs `command` to completion; on failure, the error carries the tail of its output.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<(), DynamoError> {
    let output = command.output().map_err(|e| DynamoError::Command {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    Err(DynamoError::Command {
        what: what.to_string(),
        detail: format!(
            "{}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_index_versions_lists_newest_first() {
        let out =
            "ai-dynamo (1.6.1)\nAvailable versions: 1.6.1, 1.6.0, 1.3.0.post1\n  INSTALLED: \n";
        assert_eq!(
            available_versions(out).unwrap(),
            ["1.6.1", "1.6.0", "1.3.0.post1"]
        );
        assert_eq!(
            available_versions("ERROR: No matching distribution found"),
            None
        );
    }
}
