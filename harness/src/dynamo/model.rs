//! Generates the tiny tokenizer-only model directory the mocker serves, reproducibly, once.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DynamoError;
use super::install::{PythonEnv, digest, run};
use super::lock::FileLock;

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
        let _lock = FileLock::exclusive(
            &home.join(format!("{}.lock", &key[..16])),
            super::lock::SETUP_WAIT,
        )?;
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
