//! The state file a deployment's supervisor publishes for the suite processes that use it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DynamoError;

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Processes started, not yet serving.
    Starting,
    /// Serving the model; workers healthy.
    Ready,
    /// Could not become ready; see `detail`.
    Failed,
    /// Shutting down.
    Stopping,
}

/// A worker's role in the disaggregated graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    /// The guide's VllmDecodeWorker.
    Decode,
    /// The guide's VllmPrefillWorker.
    Prefill,
}

impl WorkerRole {
    /// The role's name in case names and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerRole::Decode => "decode",
            WorkerRole::Prefill => "prefill",
        }
    }
}

/// A worker as started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerState {
    /// Its role.
    pub role: WorkerRole,
    /// Its system port's base URL (`/health`, `/live`, `/metrics`).
    pub system_url: String,
    /// How it was started, for reports: engine and mode.
    pub engine: String,
}

/// A process the supervisor started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    /// `frontend`, `decode`, `prefill`, `etcd`, `nats`.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
    /// The command line, for evidence.
    pub command: String,
}

/// Everything a suite process needs to use a running deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentState {
    /// The Dynamo release.
    pub version: String,
    /// The served model name.
    pub model: String,
    /// The supervisor's process id.
    pub supervisor_pid: u32,
    /// Where it is in its life.
    pub phase: Phase,
    /// Why it failed, or which process has exited since.
    pub detail: Option<String>,
    /// The frontend's base URL.
    pub frontend_url: String,
    /// The workers.
    pub workers: Vec<WorkerState>,
    /// Every process started.
    pub processes: Vec<ProcessState>,
    /// SHA-256 of the generated tokenizer.
    pub tokenizer_sha256: String,
    /// Whether it stays up when no suite process uses it.
    pub linger: bool,
}

impl DeploymentState {
    /// The state file inside a deployment directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state, or `None` when no deployment has published one.
    pub fn read(dir: &Path) -> Result<Option<DeploymentState>, DynamoError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| DynamoError::io(&path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DynamoError::io(&path, e)),
        }
    }

    /// Publishes the state atomically.
    pub fn write(&self, dir: &Path) -> Result<(), DynamoError> {
        let path = Self::path(dir);
        let tmp = dir.join(format!("state.json.{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).expect("the state serializes");
        std::fs::write(&tmp, text).map_err(|e| DynamoError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| DynamoError::io(&path, e))
    }

    /// Withdraws the state.
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(Self::path(dir));
    }

    /// The worker of `role`, if started.
    pub fn worker(&self, role: WorkerRole) -> Option<&WorkerState> {
        self.workers.iter().find(|w| w.role == role)
    }
}
