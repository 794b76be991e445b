//! Where the cluster comes from: providers behind one entry point, each handing back a kube client.

pub mod agent;
pub mod cost;
pub mod existing;
pub mod kind;
pub mod local;
pub mod park;

use std::path::PathBuf;
use std::time::Duration;

use kube::Client;

use crate::config::{Config, ProviderKind};
use crate::k8s::{self, K8sError};

const GPU_NODES: &str = include_str!("../../../fixtures/local/cluster/gpu-nodes.yaml");

/// What a provider simulates rather than runs for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simulation {
    /// Nodes and the pod lifecycle are kwok's, not kubelets'.
    pub nodes: bool,
    /// `nvidia.com/gpu` is advertised capacity, not hardware: how, if so.
    pub gpus: Option<&'static str>,
    /// No volume is really provisioned.
    pub volumes: bool,
}

impl Simulation {
    /// One line for reports.
    pub fn describe(&self) -> String {
        let mut simulated = Vec::new();
        if self.nodes {
            simulated.push("nodes and pods (kwok)");
        }
        if let Some(gpus) = self.gpus {
            simulated.push(gpus);
        }
        if self.volumes {
            simulated.push("volumes (no kubelet mounts them)");
        }
        if simulated.is_empty() {
            "nothing".into()
        } else {
            simulated.join(", ")
        }
    }
}

/// A connected cluster.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: Client,
    /// Which provider brought it.
    pub provider: ProviderKind,
    /// The API server's reported version.
    pub version: String,
    /// What it simulates.
    pub simulation: Simulation,
    /// The kubeconfig it was reached through (for helm).
    pub kubeconfig: PathBuf,
    /// The kubeconfig context, if one was named.
    pub context: Option<String>,
    /// The Helm the guide's chart steps run with ([`crate::helm::resolve`]); `None` when the run
    /// applies nothing and none is built or named.
    pub helm: Option<crate::helm::Helm>,
    /// The images the suite built and loaded into the nodes (kind provider, simulated path).
    pub images: Vec<crate::images::Built>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("provider", &self.provider)
            .field("version", &self.version)
            .finish()
    }
}

impl Cluster {
    /// Whether the guide's downloads (the provisioner manifest from GitHub, the charts from NGC,
    /// a model from Hugging Face) are out of reach, so that the project's stand-ins take their
    /// place: the local provider, and the kind provider's simulated path.
    pub fn offline(&self) -> bool {
        match self.provider {
            ProviderKind::Local => true,
            ProviderKind::Kind => self.simulation.gpus.is_some(),
            ProviderKind::Existing => false,
        }
    }

    /// What was real and what was simulated, one line.
    pub fn provenance(&self) -> String {
        let real = match self.provider {
            ProviderKind::Local => format!(
                "a Kubernetes {} control plane (kube-apiserver, controller-manager, scheduler, etcd) built from the Go module proxy",
                self.version
            ),
            ProviderKind::Kind if self.simulation.gpus.is_some() => format!(
                "a kind cluster (Kubernetes {} nodes as Docker containers: systemd, containerd, kubelets, kube-proxy, CoreDNS, all built here from Debian and the Go module proxy), its pods real containers of images built here, the guide's local-path provisioner",
                self.version
            ),
            _ => format!("the cluster's own Kubernetes {}", self.version),
        };
        let stand_ins = match self.provider {
            ProviderKind::Local => {
                "; stand-ins: the provisioner manifest and the dynamo-crds and dynamo-platform charts are the project's own (GitHub and NGC are unreachable here)"
            }
            ProviderKind::Kind if self.simulation.gpus.is_some() => {
                "; stand-ins: the Dynamo operator (the suite's, run in the operator pod), the provisioner manifest and the dynamo-crds and dynamo-platform charts (the project's own; GitHub and NGC are unreachable here), kindnetd (the suite's node network daemon)"
            }
            _ => "",
        };
        let never_run = match self.provider {
            ProviderKind::Kind if self.simulation.gpus.is_some() => {
                "; never run on this project's machines: kind's GPU path (the published node image, the NVIDIA container toolkit in the workers, the GPU operator, nvidia-smi in a pod), for want of a GPU"
            }
            ProviderKind::Kind => {
                "; this is kind's GPU path, which this project's own machines (no GPU) have never run"
            }
            _ => "",
        };
        let helm = self
            .helm
            .as_ref()
            .map(|h| format!("; charts installed with {}", h.describe()))
            .unwrap_or_default();
        format!(
            "real: {real}; simulated: {}{stand_ins}{never_run}{helm}",
            self.simulation.describe()
        )
    }
}

/// Errors connecting to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig cannot be used.
    #[error("cannot use kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server at {server}: {reason}")]
    Unreachable {
        /// Its URL.
        server: String,
        /// Why.
        reason: String,
    },
    /// The local control plane could not be brought up.
    #[error(transparent)]
    Local(#[from] local::LocalError),
    /// Setting up the local nodes failed.
    #[error(transparent)]
    K8s(#[from] K8sError),
    /// The local cluster's agent did not start.
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    /// The kind cluster could not be brought up.
    #[error(transparent)]
    Kind(#[from] kind::KindError),
    /// Helm could not be found or built.
    #[error(transparent)]
    Helm(#[from] crate::helm::HelmError),
}

/// Connects to the configured provider's cluster, bringing the local one (and its agent, run
/// from `exe`, the `dynamo-conformance` binary) up when needed.
pub async fn connect(config: &Config, exe: &std::path::Path) -> Result<Cluster, ClusterError> {
    match config.provider {
        ProviderKind::Existing => {
            let path = existing::kubeconfig_path(config);
            let (client, version) = existing::connect(&path, config.context.as_deref()).await?;
            let (named, cache, apply) =
                (config.helm.clone(), config.cache_dir.clone(), config.apply);
            // A run that applies nothing needs no Helm: one already built or named serves evidence.
            let helm = tokio::task::spawn_blocking(move || match (apply, named) {
                (false, None) => Ok(crate::helm::built(&cache)),
                (_, named) => crate::helm::resolve(named.as_deref(), &cache).map(Some),
            })
            .await
            .expect("resolving Helm does not panic")?;
            Ok(Cluster {
                client,
                provider: ProviderKind::Existing,
                version,
                simulation: Simulation {
                    nodes: false,
                    gpus: (config.gpus == crate::config::GpuMode::Simulated).then_some(
                        "GPUs (declared simulated by --gpus simulated: nvidia.com/gpu is advertised capacity, not hardware)",
                    ),
                    volumes: false,
                },
                kubeconfig: path,
                context: config.context.clone(),
                helm,
                images: Vec::new(),
            })
        }
        ProviderKind::Local => {
            let cache = config.cache_dir.clone();
            let exe = exe.to_path_buf();
            let named = config.helm.clone();
            let (cluster, helm) = tokio::task::spawn_blocking(move || {
                let cluster = local::up(&cache)?;
                let helm = crate::helm::resolve(named.as_deref(), &cache)?;
                agent::ensure(&cache, &cluster.kubeconfig, &exe)?;
                Ok::<_, ClusterError>((cluster, helm))
            })
            .await
            .expect("the local provider does not panic")?;
            let (client, version) = existing::connect(&cluster.kubeconfig, None).await?;
            k8s::apply::apply_yaml(
                &client,
                "local/cluster/gpu-nodes.yaml",
                GPU_NODES,
                "default",
                "nodes",
            )
            .await?;
            // The provider's own objects are the environment's from the start.
            crate::ledger::hand_over(&client, "nodes").await;
            Ok(Cluster {
                client,
                provider: ProviderKind::Local,
                version,
                simulation: Simulation {
                    nodes: true,
                    gpus: Some("GPUs (nvidia.com/gpu capacity on kwok nodes)"),
                    volumes: true,
                },
                kubeconfig: cluster.kubeconfig,
                context: None,
                helm: Some(helm),
                images: Vec::new(),
            })
        }
        ProviderKind::Kind => {
            let cluster = kind::up(config).await?;
            let images = kind::load_images(&cluster, config, exe).await?;
            let (client, version) = existing::connect(&cluster.kubeconfig, None).await?;
            let gpus = (cluster.gpus == kind::Gpus::Simulated).then_some(
                "GPUs (a device plugin advertises nvidia.com/gpu on the workers; RuntimeClass nvidia is plain runc) and the vLLM engine (dynamo.vllm runs Dynamo's mocker in the runtime image)",
            );
            Ok(Cluster {
                client,
                provider: ProviderKind::Kind,
                version,
                simulation: Simulation {
                    nodes: false,
                    gpus,
                    volumes: false,
                },
                kubeconfig: cluster.kubeconfig,
                context: None,
                helm: cluster.helm,
                images,
            })
        }
    }
}

/// How long a connection check may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
