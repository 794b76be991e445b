//! Generates the tiny tokenizer-only model directory the mocker serves, reproducibly, once.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DynamoError;
use super::install::{PythonEnv, digest, run};
use super::lock::{FileLock, SETUP_WAIT};

const GENERATOR: &str = include_str!("../../../fixtures/local/model/make_model.py");
const CORPUS: &str = include_str!("../../../fixtures/local/model/corpus.txt");
const VOCAB_SIZE: &str = "2000";

/// A generated model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    /// The directory (holds `config.json`, `tokenizer.json`, ...).
    pub path: PathBuf,
    /// SHA-256 of `tokenizer.json`, for reports.
    pub tokenizer_sha256: String,
}

/// The model directory under `cache_dir`, generated with `env`'s `tokenizers` on first use.
pub fn ensure_model(cache_dir: &Path, env: &PythonEnv) -> Result<ModelDir, DynamoError> {
    let key = digest(&[
        GENERATOR.as_bytes(),
        CORPUS.as_bytes(),
        VOCAB_SIZE.as_bytes(),
    ]);
    let home = cache_dir.join("models");
    let path = home.join(&key[..16]);
    let tokenizer = path.join("tokenizer.json");
    if !tokenizer.exists() {
        std::fs::create_dir_all(&home).map_err(|e| DynamoError::io(&home, e))?;
        let _lock = FileLock::exclusive(&home.join(format!("{}.lock", &key[..16])), SETUP_WAIT)?;
        if !tokenizer.exists() {
            let work = home.join(format!("{}.work", &key[..16]));
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir_all(&work).map_err(|e| DynamoError::io(&work, e))?;
            let script = work.join("make_model.py");
            let corpus = work.join("corpus.txt");
            std::fs::write(&script, GENERATOR).map_err(|e| DynamoError::io(&script, e))?;
            std::fs::write(&corpus, CORPUS).map_err(|e| DynamoError::io(&corpus, e))?;
            let out = work.join("model");
            run(
                Command::new(env.python())
                    .arg(&script)
                    .arg("--corpus")
                    .arg(&corpus)
                    .arg("--out")
                    .arg(&out)
                    .args(["--vocab-size", VOCAB_SIZE])
                    .env("RAYON_NUM_THREADS", "1"),
                "generate the tokenizer",
            )?;
            std::fs::rename(&out, &path).map_err(|e| DynamoError::io(&path, e))?;
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    let bytes = std::fs::read(&tokenizer).map_err(|e| DynamoError::io(&tokenizer, e))?;
    Ok(ModelDir {
        path,
        tokenizer_sha256: digest(&[&bytes]),
    })
}

impl ModelDir {
    /// The Hugging Face home (`HF_HOME`) beside the model directory, in which
    /// [`ModelDir::hf_snapshot`] lays the model out under the names it is served as.
    pub fn hf_home(&self) -> PathBuf {
        self.path.with_extension("hf")
    }

    /// Lays the model directory out in [`ModelDir::hf_home`] as the Hugging Face cache holds a
    /// download of `name` (`hub/models--<org>--<name>/refs/main` naming a snapshot whose files
    /// link to the model's), once per name. The frontends of Dynamo 1.0.2 to 1.5.1 look a
    /// registered model up by its name in that cache ("Offline mode enabled but model
    /// 'Qwen/Qwen3-0.6B' not found in cache", seen here); a real cluster's frontend downloads it.
    ///
    /// Errors: [`DynamoError::Io`] when the layout cannot be written.
    pub fn hf_snapshot(&self, name: &str) -> Result<PathBuf, DynamoError> {
        let repo = self
            .hf_home()
            .join("hub")
            .join(format!("models--{}", name.replace('/', "--")));
        let revision = &self.tokenizer_sha256[..40];
        let snapshot = repo.join("snapshots").join(revision);
        let refs = repo.join("refs");
        let main = refs.join("main");
        if std::fs::read_to_string(&main).is_ok_and(|r| r == revision) {
            return Ok(snapshot);
        }
        let _lock = FileLock::exclusive(&self.path.with_extension("hf.lock"), SETUP_WAIT)?;
        std::fs::create_dir_all(&snapshot).map_err(|e| DynamoError::io(&snapshot, e))?;
        let entries = std::fs::read_dir(&self.path).map_err(|e| DynamoError::io(&self.path, e))?;
        for entry in entries {
            let from = entry.map_err(|e| DynamoError::io(&self.path, e))?.path();
            let Some(file) = from.file_name() else {
                continue;
            };
            let link = snapshot.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(&from, &link).map_err(|e| DynamoError::io(&link, e))?;
            }
        }
        std::fs::create_dir_all(&refs).map_err(|e| DynamoError::io(&refs, e))?;
        std::fs::write(&main, revision).map_err(|e| DynamoError::io(&main, e))?;
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_laid_out_as_the_hub_cache_holds_a_download_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(path.join("config.json"), "{}").unwrap();
        let model = ModelDir {
            path: path.clone(),
            tokenizer_sha256: "0123456789abcdef".repeat(4),
        };
        let snapshot = model.hf_snapshot("Qwen/Qwen3-0.6B").unwrap();
        let repo = dir.path().join("abc.hf/hub/models--Qwen--Qwen3-0.6B");
        let revision = &model.tokenizer_sha256[..40];
        assert_eq!(snapshot, repo.join("snapshots").join(revision));
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).unwrap(),
            revision
        );
        for file in ["tokenizer.json", "config.json"] {
            assert_eq!(
                std::fs::read_link(snapshot.join(file)).unwrap(),
                path.join(file)
            );
        }
        assert_eq!(model.hf_snapshot("Qwen/Qwen3-0.6B").unwrap(), snapshot);
        let other = model.hf_snapshot("org/other").unwrap();
        assert!(other.starts_with(dir.path().join("abc.hf/hub/models--org--other")));
    }
}
