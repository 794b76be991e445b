//! A local Hugging Face Hub: olah, from PyPI, serving the generated model as a git repository.
//!
//! Dynamo 0.8.1 and 0.9.1's frontends ask the Hub's API for each registered model's files and
//! have no offline mode (seen here; [`crate::release::Release::asks_the_hub`]). This machine has
//! no route to huggingface.co, so those releases get a real Hub-compatible server instead: olah,
//! a self-hosted Hub mirror, offline, serving the tokenizer-only model under the name the graph
//! registers. Reports say the Hub is simulated so.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DynamoError;
use super::install::{ensure_venv, run};
use super::lock::{FileLock, SETUP_WAIT};
use super::model::ModelDir;

/// olah and its dependencies, pinned (installed with `--no-deps`).
const REQUIREMENTS: &str = include_str!("../../../fixtures/local/hub/requirements.txt");

/// The server that stands in for the Hub, as reports name it.
pub const SERVER: &str = "olah 0.5.4 (a self-hosted Hugging Face Hub mirror from PyPI, offline)";

/// The environment variable that points Hugging Face clients (Python's `huggingface_hub`, Rust's
/// `hf-hub` in Dynamo's frontend) at a Hub other than huggingface.co.
pub const ENDPOINT_VAR: &str = "HF_ENDPOINT";

/// An installed Hub server and the git mirrors it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hub {
    /// olah's command line entry point.
    pub program: PathBuf,
    /// The directory whose `models/<org>/<name>` git repositories olah serves.
    pub mirrors: PathBuf,
}

/// The Hub for `model`, olah installed under `cache_dir` on first use, serving `model` as each
/// of `names` (`"Qwen/Qwen3-0.6B"`).
///
/// # Errors
/// [`DynamoError::Command`] when olah cannot be installed or a mirror cannot be committed;
/// [`DynamoError::Missing`] when git is missing and cannot be installed.
pub fn ensure(cache_dir: &Path, model: &ModelDir, names: &[&str]) -> Result<Hub, DynamoError> {
    let root = ensure_venv(
        &cache_dir.join("hub"),
        REQUIREMENTS,
        "import olah.server",
        "olah (the local Hugging Face Hub)",
        || Ok(()),
    )?;
    let hub = Hub {
        program: root.join("bin").join("olah-cli"),
        mirrors: mirrors_of(model),
    };
    std::fs::create_dir_all(&hub.mirrors).map_err(|e| DynamoError::io(&hub.mirrors, e))?;
    for name in names {
        mirror(model, name)?;
    }
    Ok(hub)
}

/// Commits `model`'s files as the `main` branch of the mirror of `name` (`org/name`) under
/// [`mirrors_of`], once: author, dates and files fixed, so the revision the Hub reports is the
/// same on every machine. Needs no Hub: a worker's model is mirrored whatever its own release,
/// for a frontend of another release that asks (version skew).
///
/// # Errors
/// [`DynamoError::Command`] when `name` is not `org/name` or `name` (a path would leave the
/// mirrors) or the commit fails; [`DynamoError::Missing`] when git is missing and cannot be
/// installed.
pub fn mirror(model: &ModelDir, name: &str) -> Result<(), DynamoError> {
    let mirrors = mirrors_of(model);
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\\'))
    {
        return Err(DynamoError::Command {
            what: format!("mirror the model as {name:?} for the local Hub"),
            detail: "a Hub model name is `org/name` or `name`".into(),
        });
    }
    let repo = mirrors.join("models").join(name);
    if repo.join(".git").join("refs/heads/main").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&mirrors).map_err(|e| DynamoError::io(&mirrors, e))?;
    let _lock = FileLock::exclusive(&mirrors.join(".lock"), SETUP_WAIT)?;
    if repo.join(".git").join("refs/heads/main").exists() {
        return Ok(());
    }
    let git = crate::debian::ensure(&[GIT], &mirrors, "the local Hugging Face Hub")
        .map_err(|e| DynamoError::Missing {
            what: "git".into(),
            hint: e.to_string(),
        })?
        .remove(0);
    let work = mirrors.join(".work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| DynamoError::io(&work, e))?;
    let entries = std::fs::read_dir(&model.path).map_err(|e| DynamoError::io(&model.path, e))?;
    for entry in entries {
        let from = entry.map_err(|e| DynamoError::io(&model.path, e))?.path();
        if let Some(file) = from.file_name() {
            let to = work.join(file);
            std::fs::copy(&from, &to).map_err(|e| DynamoError::io(&to, e))?;
        }
    }
    let git_in = |args: &[&str]| {
        let mut command = Command::new(&git);
        command
            .current_dir(&work)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        for (key, value) in [
            ("GIT_AUTHOR_NAME", "dynamo-conformance"),
            ("GIT_AUTHOR_EMAIL", "dynamo-conformance@localhost"),
            ("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z"),
            ("GIT_COMMITTER_NAME", "dynamo-conformance"),
            ("GIT_COMMITTER_EMAIL", "dynamo-conformance@localhost"),
            ("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z"),
        ] {
            command.env(key, value);
        }
        command
    };
    let what = format!("commit the model as {name} for the local Hub");
    run(
        &mut git_in(&["init", "--quiet", "--initial-branch=main"]),
        &what,
    )?;
    run(&mut git_in(&["add", "--all"]), &what)?;
    run(
        &mut git_in(&["commit", "--quiet", "--no-gpg-sign", "-m", name]),
        &what,
    )?;
    if let Some(parent) = repo.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DynamoError::io(parent, e))?;
    }
    // A repository left without its branch (an earlier commit cut short) is made again.
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::rename(&work, &repo).map_err(|e| DynamoError::io(&repo, e))?;
    Ok(())
}

impl Hub {
    /// olah's command line serving [`Hub::mirrors`] offline on `127.0.0.1:port`, its
    /// configuration, cache and logs under `dir` (written now).
    ///
    /// # Errors
    /// [`DynamoError::Io`] when `dir` cannot be written.
    pub fn command(&self, dir: &Path, port: u16) -> Result<Vec<String>, DynamoError> {
        std::fs::create_dir_all(dir).map_err(|e| DynamoError::io(dir, e))?;
        let config = dir.join("olah.toml");
        let netloc = format!("127.0.0.1:{port}");
        let settings = OlahConfig {
            basic: Basic {
                host: "127.0.0.1",
                port,
                repos_path: dir.join("repos"),
                mirrors_path: vec![self.mirrors.clone()],
                mirror_netloc: netloc.clone(),
                mirror_lfs_netloc: netloc,
            },
            accessibility: Accessibility { offline: true },
        };
        let text = toml::to_string(&settings).map_err(|e| DynamoError::Command {
            what: "write olah's configuration".into(),
            detail: e.to_string(),
        })?;
        std::fs::write(&config, text).map_err(|e| DynamoError::io(&config, e))?;
        Ok(vec![
            "--config".into(),
            config.display().to_string(),
            "--log-path".into(),
            dir.join("logs").display().to_string(),
        ])
    }
}

/// The directory whose `models/<org>/<name>` git repositories mirror `model` for the Hub.
pub fn mirrors_of(model: &ModelDir) -> PathBuf {
    model.path.with_extension("hub")
}

/// The Hub API URL that answers 200 once the Hub at `url` serves `name`: the model info a
/// frontend asks for (`GET /api/models/<name>/revision/main`).
pub fn model_info_url(url: &str, name: &str) -> String {
    format!("{url}/api/models/{name}/revision/main")
}

/// olah's configuration file (`olah.toml`), the keys it reads (olah 0.5.4's `configs.py`).
#[derive(serde::Serialize)]
struct OlahConfig {
    basic: Basic,
    accessibility: Accessibility,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct Basic {
    host: &'static str,
    port: u16,
    repos_path: PathBuf,
    mirrors_path: Vec<PathBuf>,
    mirror_netloc: String,
    mirror_lfs_netloc: String,
}

#[derive(serde::Serialize)]
struct Accessibility {
    /// Never asks huggingface.co: a repository not mirrored is not found.
    offline: bool,
}

const GIT: crate::debian::Package = crate::debian::Package {
    program: "git",
    package: "git",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn olah_is_configured_offline_on_loopback_serving_the_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub {
            program: PathBuf::from("/venv/bin/olah-cli"),
            mirrors: PathBuf::from("/cache/models/abc.hub"),
        };
        let args = hub.command(dir.path(), 18090).unwrap();
        assert_eq!(args[0], "--config");
        let config = std::fs::read_to_string(&args[1]).unwrap();
        let parsed: toml::Table = config.parse().unwrap();
        assert_eq!(parsed["basic"]["port"].as_integer(), Some(18090));
        assert_eq!(parsed["basic"]["host"].as_str(), Some("127.0.0.1"));
        assert_eq!(
            parsed["basic"]["mirrors-path"].as_array().unwrap()[0].as_str(),
            Some("/cache/models/abc.hub")
        );
        assert_eq!(parsed["accessibility"]["offline"].as_bool(), Some(true));
        assert_eq!(
            model_info_url("http://127.0.0.1:18090", "Qwen/Qwen3-0.6B"),
            "http://127.0.0.1:18090/api/models/Qwen/Qwen3-0.6B/revision/main"
        );
    }
}
