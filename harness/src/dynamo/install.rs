//! Installs a Dynamo release from PyPI into a cached virtual environment, once per machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::DynamoError;
use super::lock::FileLock;
use crate::profile::DynamoVersion;

const REQUIREMENTS_0_4_1: &str =
    include_str!("../../../fixtures/local/dynamo/0.4.1/requirements.txt");
const REQUIREMENTS_1_6_1: &str =
    include_str!("../../../fixtures/local/dynamo/1.6.1/requirements.txt");

/// The pinned requirements of a release (every package, installed with `--no-deps`).
pub fn requirements(version: DynamoVersion) -> &'static str {
    match version {
        DynamoVersion::V0_4_1 => REQUIREMENTS_0_4_1,
        DynamoVersion::V1_6_1 => REQUIREMENTS_1_6_1,
    }
}

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
    let requirements = requirements(version);
    let key = digest(&[requirements.as_bytes()]);
    let home = cache_dir.join("dynamo").join(version.as_str());
    let env = PythonEnv {
        root: home.join("venv"),
        version,
    };
    let marker = env.root.join(format!(".installed-{}", &key[..16]));
    if marker.exists() {
        return Ok(env);
    }
    std::fs::create_dir_all(&home).map_err(|e| DynamoError::io(&home, e))?;
    let _lock = FileLock::exclusive(&home.join("install.lock"), super::lock::SETUP_WAIT)?;
    if marker.exists() {
        return Ok(env);
    }
    eprintln!(
        "dynamo-conformance: installing Dynamo {version} from PyPI into {} (first run on this machine only)",
        env.root.display()
    );
    if env.root.exists() {
        std::fs::remove_dir_all(&env.root).map_err(|e| DynamoError::io(&env.root, e))?;
    }
    let python = find_python()?;
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&env.root),
        "create the virtual environment",
    )?;
    let requirements_file = home.join("requirements.txt");
    std::fs::write(&requirements_file, requirements)
        .map_err(|e| DynamoError::io(&requirements_file, e))?;
    run(
        Command::new(env.python())
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
        &format!("install Dynamo {version} with pip"),
    )?;
    run(
        Command::new(env.python())
            .args(["-c", "import dynamo.frontend, dynamo.mocker, tokenizers"]),
        &format!("import Dynamo {version}"),
    )?;
    std::fs::write(&marker, key).map_err(|e| DynamoError::io(&marker, e))?;
    Ok(env)
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
