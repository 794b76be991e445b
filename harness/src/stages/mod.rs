//! The guide's steps as idempotent stages: each applies its fixtures and waits for its own readiness.

pub mod chart;
pub mod crds;
pub mod graph;
pub mod helm;
pub mod platform;
pub mod secret;
pub mod storage;

use std::time::Duration;

use crate::cluster::Cluster;
use crate::config::{Config, ProviderKind};
use crate::dynamo::lock::FileLock;
use crate::k8s::K8sError;

/// A step of the guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The local-path provisioner and the guide's default StorageClass.
    Storage,
    /// The Dynamo CRDs.
    Crds,
    /// The operator, etcd, NATS and nats-box.
    Platform,
    /// The `hf-token-secret` in the platform namespace.
    Secret,
    /// The guide's DynamoGraphDeployment, ready.
    Graph,
}

impl Stage {
    /// The stage's name in labels and reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Storage => "storage",
            Stage::Crds => "crds",
            Stage::Platform => "platform",
            Stage::Secret => "secret",
            Stage::Graph => "graph",
        }
    }

    /// Every stage, in the guide's order.
    pub const ALL: [Stage; 5] = [
        Stage::Storage,
        Stage::Crds,
        Stage::Platform,
        Stage::Secret,
        Stage::Graph,
    ];

    /// The stage named `name` ([`Stage::name`]).
    pub fn named(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The stages this one stands on, as the guide orders them: the platform's etcd and NATS claim
    /// volumes of the default StorageClass (the guide's "prerequisite"), its operator watches the
    /// CRDs, and the graph needs the platform and the secret.
    pub fn prerequisites(self) -> &'static [Stage] {
        match self {
            Stage::Storage | Stage::Crds | Stage::Secret => &[],
            Stage::Platform => &[Stage::Storage, Stage::Crds],
            Stage::Graph => &[Stage::Platform, Stage::Secret],
        }
    }

    /// Applies the stage (and the stages before it) and waits for it to be ready.
    /// Safe to run twice and from two processes at once; cheap when already applied.
    pub async fn ensure(
        self,
        cluster: &Cluster,
        config: &Config,
    ) -> Result<Vec<String>, StageError> {
        if !config.apply {
            return Ok(vec![format!(
                "check only: stage {} not applied; the cluster is judged as it stands",
                self.name()
            )]);
        }
        let mut notes = Vec::new();
        for before in self.prerequisites() {
            notes.extend(Box::pin(before.ensure(cluster, config)).await?);
        }
        // One process at a time per stage: helm refuses concurrent upgrades of one release.
        let path = config
            .cache_dir
            .join("stages")
            .join(format!("{}.lock", self.name()));
        let _lock =
            tokio::task::block_in_place(|| FileLock::exclusive(&path, Duration::from_secs(900)))
                .map_err(|e| StageError::Input {
                    stage: self.name(),
                    reason: e.to_string(),
                })?;
        notes.extend(match self {
            Stage::Storage => storage::ensure(cluster, config).await?,
            Stage::Crds => crds::ensure(cluster, config).await?,
            Stage::Platform => platform::ensure(cluster, config).await?,
            Stage::Secret => secret::ensure(cluster, config).await?,
            Stage::Graph => graph::ensure(cluster, config).await?,
        });
        if matches!(cluster.provider, ProviderKind::Local | ProviderKind::Kind) {
            // Applied stages stay for the next run there: they belong to the environment now.
            for problem in crate::ledger::hand_over(&cluster.client, self.name()).await {
                notes.push(format!("not handed over to the environment: {problem}"));
            }
        }
        Ok(notes)
    }
}

/// Errors applying a stage.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Talking to the cluster failed, or a wait ran out.
    #[error("stage {stage}: {source}")]
    Cluster {
        /// The stage.
        stage: &'static str,
        /// What went wrong.
        source: K8sError,
    },
    /// An input the stage needs is missing or unusable.
    #[error("stage {stage}: {reason}")]
    Input {
        /// The stage.
        stage: &'static str,
        /// What is missing.
        reason: String,
    },
}

/// A wait's timeout with the states of the pods behind the workload appended (the kubelet's
/// reasons and the latest warning of each), so that a stuck stage says why; other errors as they are.
pub(crate) async fn explain_timeout(
    error: K8sError,
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> K8sError {
    match error {
        K8sError::Timeout {
            what,
            condition,
            waited,
            mut last_seen,
        } => {
            let pods = crate::k8s::pods::explain(client, namespace, selector).await;
            last_seen.push_str(&format!("; {}", pods.join("; ")));
            K8sError::Timeout {
                what,
                condition,
                waited,
                last_seen,
            }
        }
        other => other,
    }
}

impl StageError {
    /// The name of the stage that failed ([`Stage::name`]).
    pub fn stage(&self) -> &'static str {
        match self {
            StageError::Cluster { stage, .. } | StageError::Input { stage, .. } => stage,
        }
    }

    pub(crate) fn cluster(stage: Stage) -> impl Fn(K8sError) -> StageError {
        move |source| StageError::Cluster {
            stage: stage.name(),
            source,
        }
    }
}
