//! The kind provider: real kubelets in Docker containers; the host's GPUs on a GPU runner, simulated ones elsewhere.
//!
//! Two paths, one code path after the cluster exists:
//! - **simulated** (no GPU, no registry): the node image and every image the guide runs are built
//!   here ([`crate::images`]); `kind-config/simulated.yaml` creates one control plane and two
//!   workers; the node network daemon and the simulated-GPU device plugin
//!   (`fixtures/kind/cluster/`) are applied; the guide's images are loaded with `kind load`.
//! - **real** (a GPU runner): the published kind node image, `kind-config/gpu.yaml` (GPUs injected
//!   into the worker as NVIDIA's nvkind does), the NVIDIA container toolkit inside the worker, the
//!   GPU operator with Helm, then the GPU gate ([`gpu`]). Never run on this project's machines.
//!
//! The cluster is created once and reused while its node image and configuration are unchanged
//! (a stamp under `<cache>/kind/`); `kind down` deletes it and stops a Docker engine the suite started.

pub mod gpu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::command::{self, Bounds, CommandError};
use crate::config::{Config, GpuMode};
use crate::docker::{self, DockerError, Engine};
use crate::images::{self, ImageError, Input, catalog};
use crate::k8s::{K8sError, apply, wait};

/// The kind cluster's name (also the prefix of its node containers).
pub const CLUSTER_NAME: &str = "dynamo-conformance";
/// The published node image of the GPU path: kind v0.33.0's default
/// (`pkg/apis/config/defaults/image.go` of the kind module), pinned by digest.
pub const PUBLISHED_NODE_IMAGE: &str =
    "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5";
const SIMULATED_CONFIG: &str = include_str!("../../../../kind-config/simulated.yaml");
const GPU_CONFIG: &str = include_str!("../../../../kind-config/gpu.yaml");
const NODE_NETWORK: &str = include_str!("../../../../fixtures/kind/cluster/node-network.yaml");
const GPU_SIMULATION: &str = include_str!("../../../../fixtures/kind/cluster/gpu.yaml");
/// How long `kind create cluster` may take.
const CREATE_WAIT: Duration = Duration::from_secs(600);
/// How long `kind delete cluster` and `kind get` may take.
const QUERY_WAIT: Duration = Duration::from_secs(180);
/// How long nodes may take to turn Ready once the network is applied.
const NODES_WAIT: Duration = Duration::from_secs(300);

/// Errors bringing up or tearing down the kind cluster.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    /// The Docker engine is missing or unusable.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// An image could not be built.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Helm could not be found or built.
    #[error(transparent)]
    Helm(#[from] crate::helm::HelmError),
    /// kind or another command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The cluster answered badly or a wait ran out.
    #[error(transparent)]
    K8s(#[from] K8sError),
    /// The GPU path's prerequisites or gate failed.
    #[error("GPU gate: {0}")]
    Gpu(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Too little disk is free for the nodes or the images they load.
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    /// The kubeconfig kind wrote cannot be used.
    #[error("the kind cluster's kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KindError + '_ {
    move |source| KindError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which GPUs the cluster's workers have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Gpus {
    /// The host's GPUs, through the NVIDIA container toolkit and the GPU operator.
    Real,
    /// `nvidia.com/gpu` advertised by the suite's device plugin; RuntimeClass `nvidia` is runc.
    Simulated,
}

impl Gpus {
    /// `real` or `simulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Gpus::Real => "real",
            Gpus::Simulated => "simulated",
        }
    }
}

/// `auto` resolved: real GPUs when `nvidia-smi -L` lists one.
pub fn resolve_gpus(mode: GpuMode) -> Gpus {
    match mode {
        GpuMode::Real => Gpus::Real,
        GpuMode::Simulated => Gpus::Simulated,
        GpuMode::Auto => {
            let listed = command::locate("nvidia-smi").is_some_and(|smi| {
                command::run(
                    Command::new(smi).arg("-L"),
                    "list GPUs (nvidia-smi -L)",
                    Bounds::within(Duration::from_secs(30)),
                )
                .is_ok_and(|out| gpu::count_gpus(&out) > 0)
            });
            if listed { Gpus::Real } else { Gpus::Simulated }
        }
    }
}

/// A running kind cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCluster {
    /// The cluster's name.
    pub name: String,
    /// Its kubeconfig (kind writes it; the user's `~/.kube/config` is left alone).
    pub kubeconfig: PathBuf,
    /// The node image it runs.
    pub node_image: String,
    /// Real or simulated GPUs.
    pub gpus: Gpus,
    /// The kind binary.
    pub kind: PathBuf,
    /// The Helm in use ([`crate::helm::resolve`]); `None` for a cluster found, not brought up.
    pub helm: Option<crate::helm::Helm>,
}

/// What a cluster was created from, kept beside it to decide whether it can be reused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    node_image_id: String,
    config_digest: String,
    gpus: Gpus,
}

fn dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("kind")
}

fn stamp_path(cache_dir: &Path) -> PathBuf {
    dir(cache_dir).join("cluster.json")
}

/// The images loaded into the current cluster, by reference, with their ids.
fn loaded_path(cache_dir: &Path) -> PathBuf {
    dir(cache_dir).join("loaded.json")
}

/// Where kind writes the cluster's kubeconfig.
pub fn kubeconfig_path(cache_dir: &Path) -> PathBuf {
    dir(cache_dir).join("kubeconfig.yaml")
}

/// The cluster configuration for `gpus`, named [`CLUSTER_NAME`], as JSON (which kind reads as YAML).
pub fn render_config(gpus: Gpus) -> Result<String, KindError> {
    let template = match gpus {
        Gpus::Real => GPU_CONFIG,
        Gpus::Simulated => SIMULATED_CONFIG,
    };
    let mut config: serde_json::Value =
        serde_saphyr::from_str(template).map_err(|e| KindError::Kubeconfig {
            path: PathBuf::from("kind-config"),
            reason: format!("the kind configuration is not valid YAML: {e}"),
        })?;
    config["name"] = CLUSTER_NAME.into();
    Ok(serde_json::to_string_pretty(&config).expect("JSON values serialize"))
}

fn kind(binary: &Path, cache_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    // kind runs `docker`; our engine's socket is the default one.
    command.env("KIND_EXPERIMENTAL_PROVIDER", "docker");
    command.env("KUBECONFIG", kubeconfig_path(cache_dir));
    command
}

/// The clusters kind knows, by name.
fn clusters(binary: &Path, cache_dir: &Path) -> Result<Vec<String>, KindError> {
    let out = command::run(
        kind(binary, cache_dir).args(["get", "clusters"]),
        "list kind clusters (kind get clusters)",
        Bounds::within(QUERY_WAIT),
    )?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// Builds what the path needs, creates the cluster (or reuses a matching one) and waits for its
/// nodes; on the real path, sets up the GPUs and passes the GPU gate. Safe from several
/// processes at once (a lock under `<cache>/kind`).
pub async fn up(config: &Config) -> Result<KindCluster, KindError> {
    let cache_dir = config.cache_dir.clone();
    let home = dir(&cache_dir);
    std::fs::create_dir_all(&home).map_err(io(&home))?;
    let gpus = resolve_gpus(config.gpus);
    let engine = docker::ensure(&cache_dir).await?;
    let lock_path = home.join("cluster.lock");
    let _lock = tokio::task::block_in_place(|| {
        crate::dynamo::lock::FileLock::exclusive(&lock_path, Duration::from_secs(1800))
    })
    .map_err(|e| CommandError {
        what: "take the kind cluster lock".into(),
        detail: e.to_string(),
    })?;
    let cache = cache_dir.clone();
    let artifacts = tokio::task::spawn_blocking(move || catalog::node_artifacts(&cache))
        .await
        .expect("building does not panic")?;
    let (named, cache) = (config.helm.clone(), cache_dir.clone());
    let helm = tokio::task::spawn_blocking(move || crate::helm::resolve(named.as_deref(), &cache))
        .await
        .expect("resolving Helm does not panic")?;
    let node_image = match gpus {
        Gpus::Simulated => {
            node_image(&engine, &artifacts, &home).await?;
            catalog::NODE_IMAGE.to_string()
        }
        Gpus::Real => {
            gpu::check_host(&engine).await?;
            PUBLISHED_NODE_IMAGE.to_string()
        }
    };
    let cluster = KindCluster {
        name: CLUSTER_NAME.into(),
        kubeconfig: kubeconfig_path(&cache_dir),
        node_image: node_image.clone(),
        gpus,
        kind: artifacts.kind.clone(),
        helm: Some(helm),
    };
    let rendered = render_config(gpus)?;
    let image_id = engine
        .docker
        .inspect_image(&node_image)
        .await
        .ok()
        .and_then(|i| i.id)
        .unwrap_or_else(|| node_image.clone());
    let stamp = Stamp {
        node_image_id: image_id,
        config_digest: crate::dynamo::install::digest(&[
            rendered.as_bytes(),
            NODE_NETWORK.as_bytes(),
            GPU_SIMULATION.as_bytes(),
        ]),
        gpus,
    };
    let recorded: Option<Stamp> = std::fs::read_to_string(stamp_path(&cache_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let kind_bin = cluster.kind.clone();
    let cache = cache_dir.clone();
    let exists = tokio::task::spawn_blocking(move || clusters(&kind_bin, &cache))
        .await
        .expect("kind get does not panic")?
        .contains(&cluster.name);
    if exists && recorded.as_ref() == Some(&stamp) && answers(&cluster).await {
        return Ok(cluster);
    }
    if exists {
        eprintln!(
            "dynamo-conformance: replacing the kind cluster {} (its node image or configuration changed, or it does not answer)",
            cluster.name
        );
        delete(&cluster.kind, &cache_dir).await?;
    }
    let _ = std::fs::remove_file(stamp_path(&cache_dir));
    let _ = std::fs::remove_file(loaded_path(&cache_dir));
    if gpus == Gpus::Simulated {
        node_disk_need(&engine, &artifacts, &rendered)
            .await?
            .check(
                &docker_root(&engine).await,
                "create the kind cluster",
                DISK_HINT,
            )?;
    }
    create(&cluster, &rendered, &cache_dir).await?;
    let client = client(&cluster).await?;
    match gpus {
        Gpus::Simulated => {
            for (fixture, text) in [
                ("kind/cluster/node-network.yaml", NODE_NETWORK),
                ("kind/cluster/gpu.yaml", GPU_SIMULATION),
            ] {
                apply::apply_yaml(&client, fixture, text, "kube-system", "nodes").await?;
            }
            // The provider's own objects are the environment's from the start.
            crate::ledger::hand_over(&client, "nodes").await;
            nodes_ready(&client).await?;
            gpu::wait_advertised(&client, NODES_WAIT).await?;
        }
        Gpus::Real => {
            nodes_ready(&client).await?;
            leave_default_storage_to_the_guide(&client).await?;
            gpu::set_up(&cluster, config, &client).await?;
        }
    }
    let path = stamp_path(&cache_dir);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&stamp).expect("plain data serializes"),
    )
    .map_err(io(&path))?;
    Ok(cluster)
}

/// Builds the node's images, saves them into one tarball, and builds the node image around it
/// (the tarball is saved only when the node image must be rebuilt).
async fn node_image(
    engine: &Engine,
    artifacts: &catalog::NodeArtifacts,
    home: &Path,
) -> Result<(), KindError> {
    let work = home.join("work");
    let wanted = catalog::node_images(artifacts);
    let built = images::ensure(&engine.docker, &wanted, &work).await?;
    let baked: Vec<&images::Built> = wanted
        .iter()
        .zip(&built)
        .filter(|(image, _)| image.placement == images::Placement::Node)
        .map(|(_, b)| b)
        .collect();
    let key =
        crate::dynamo::install::digest(&baked.iter().map(|b| b.key.as_bytes()).collect::<Vec<_>>())
            [..16]
            .to_string();
    let saved = work.join(format!("node-images-{key}.tar"));
    let node = catalog::node_image(artifacts, Input::keyed(&saved, "images/images.tar", &key));
    let known = built
        .iter()
        .map(|b| (b.reference.clone(), b.key.clone()))
        .collect();
    let current = engine
        .docker
        .inspect_image(catalog::NODE_IMAGE)
        .await
        .ok()
        .and_then(|i| i.config)
        .and_then(|c| c.labels)
        .and_then(|l| l.get(images::KEY_LABEL).cloned());
    if current == Some(node.key(&known)) {
        return Ok(());
    }
    if !saved.exists() {
        eprintln!(
            "dynamo-conformance: saving the node's {} images into {}",
            baked.len(),
            saved.display()
        );
        let references: Vec<&str> = baked.iter().map(|b| b.reference.as_str()).collect();
        let partial = saved.with_extension("partial");
        images::save(&engine.docker, &references, &partial).await?;
        std::fs::rename(&partial, &saved).map_err(io(&saved))?;
    }
    let mut all = wanted;
    all.push(node);
    images::ensure(&engine.docker, &all, &work).await?;
    let _ = std::fs::remove_file(&saved);
    Ok(())
}

/// The summed size of `references` in the engine, in bytes (as `docker images` reports them).
async fn images_size(engine: &Engine, references: &[String]) -> Result<u64, KindError> {
    let mut bytes = 0u64;
    for reference in references {
        let size = engine
            .docker
            .inspect_image(reference)
            .await
            .map_err(DockerError::api(format!("inspect {reference}")))?
            .size
            .unwrap_or_default();
        bytes += u64::try_from(size).unwrap_or_default();
    }
    Ok(bytes)
}

/// What the simulated path's nodes take on Docker's disk: each node imports the baked images
/// into its own containerd (a volume per node), which keeps every layer packed and unpacked.
async fn node_disk_need(
    engine: &Engine,
    artifacts: &catalog::NodeArtifacts,
    rendered: &str,
) -> Result<crate::disk::Need, KindError> {
    let nodes = serde_json::from_str::<serde_json::Value>(rendered)
        .ok()
        .and_then(|c| c["nodes"].as_array().map(Vec::len))
        .unwrap_or(1) as u64;
    let baked: Vec<String> = catalog::node_images(artifacts)
        .into_iter()
        .filter(|i| i.placement == images::Placement::Node)
        .map(|i| i.reference)
        .collect();
    let bytes = images_size(engine, &baked).await?;
    Ok(crate::disk::Need {
        bytes: bytes * 2 * nodes,
        reckoning: format!(
            "the node's images of {} × 2, packed and unpacked, × {nodes} nodes",
            crate::disk::gb(bytes)
        ),
    })
}

/// `kind create cluster`, its progress echoed.
async fn create(cluster: &KindCluster, rendered: &str, cache_dir: &Path) -> Result<(), KindError> {
    let config_file = dir(cache_dir).join("kind-config.json");
    std::fs::write(&config_file, rendered).map_err(io(&config_file))?;
    eprintln!(
        "dynamo-conformance: creating the kind cluster {} ({} GPUs, node image {})",
        cluster.name,
        cluster.gpus.as_str(),
        cluster.node_image
    );
    let started = Instant::now();
    let mut command = kind(&cluster.kind, cache_dir);
    command
        .args(["create", "cluster", "--name", &cluster.name, "--image"])
        .arg(&cluster.node_image)
        .arg("--config")
        .arg(&config_file)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .arg("--retain");
    let what = format!(
        "create the kind cluster {} (kind create cluster)",
        cluster.name
    );
    tokio::task::spawn_blocking(move || {
        command::run(
            &mut command,
            &what,
            Bounds::within(CREATE_WAIT).echoed("kind: "),
        )
    })
    .await
    .expect("kind does not panic")?;
    eprintln!(
        "dynamo-conformance: kind cluster created in {}",
        command::minutes(started.elapsed())
    );
    Ok(())
}

/// `kind delete cluster`.
async fn delete(binary: &Path, cache_dir: &Path) -> Result<(), KindError> {
    let mut command = kind(binary, cache_dir);
    command.args(["delete", "cluster", "--name", CLUSTER_NAME]);
    tokio::task::spawn_blocking(move || {
        command::run(
            &mut command,
            "delete the kind cluster (kind delete cluster)",
            Bounds::within(QUERY_WAIT),
        )
    })
    .await
    .expect("kind does not panic")?;
    Ok(())
}

/// A client for the cluster's API server.
pub async fn client(cluster: &KindCluster) -> Result<Client, KindError> {
    crate::cluster::existing::connect(&cluster.kubeconfig, None)
        .await
        .map(|(client, _)| client)
        .map_err(|e| KindError::Kubeconfig {
            path: cluster.kubeconfig.clone(),
            reason: e.to_string(),
        })
}

async fn answers(cluster: &KindCluster) -> bool {
    cluster.kubeconfig.is_file() && client(cluster).await.is_ok()
}

/// Waits, watch-driven and bounded, until every node reports Ready.
async fn nodes_ready(client: &Client) -> Result<(), KindError> {
    each_node_until(
        client,
        "",
        "Ready",
        NODES_WAIT,
        |n| node_condition(n, "Ready").is_some_and(|(s, _)| s == "True"),
        |n| {
            node_condition(n, "Ready").map_or("no Ready condition yet".into(), |(s, m)| {
                format!("Ready={s} ({m})")
            })
        },
    )
    .await
}

/// Waits, watch-driven and bounded by `timeout` for each, until every node matching `selector`
/// (all nodes when empty) meets `condition`; on timeout the error says what `describe` saw.
pub async fn each_node_until(
    client: &Client,
    selector: &str,
    condition: &str,
    timeout: Duration,
    holds: impl Fn(Option<&Node>) -> bool + Clone + Send + 'static,
    describe: impl Fn(Option<&Node>) -> String,
) -> Result<(), KindError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| K8sError::api("list the kind nodes", e))?;
    for node in listed.items {
        let name = node.name_any();
        let holds = holds.clone();
        wait::until(
            client,
            wait::Wait {
                api: nodes.clone(),
                name: &name,
                namespace: None,
                condition,
                timeout,
            },
            move |n: Option<&Node>| holds(n),
            &describe,
        )
        .await?;
    }
    Ok(())
}

/// The published node image installs kind's own default StorageClass `standard`; the guide makes
/// its `local-path` the default, and two defaults are a misconfiguration, so the class kind made
/// for this cluster (which the suite created) stops being the default.
async fn leave_default_storage_to_the_guide(client: &Client) -> Result<(), KindError> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let classes: Api<StorageClass> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"annotations": {
        "storageclass.kubernetes.io/is-default-class": "false"
    }}});
    match classes
        .patch(
            "standard",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => {
            Err(K8sError::api("make kind's StorageClass standard no longer the default", e).into())
        }
    }
}

/// A node condition's status and message.
pub fn node_condition(node: Option<&Node>, kind: &str) -> Option<(String, String)> {
    node?
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

/// Builds the guide's images for `release` and loads them into the cluster's nodes (kind skips
/// a node that has the image already). A no-op on the real path, whose images come from registries.
pub async fn load_images(
    cluster: &KindCluster,
    config: &Config,
    exe: &Path,
) -> Result<Vec<images::Built>, KindError> {
    if cluster.gpus == Gpus::Real {
        return Ok(Vec::new());
    }
    let engine = docker::ensure(&config.cache_dir).await?;
    // One process builds and loads at a time (nextest runs cases as parallel processes).
    let lock_path = dir(&config.cache_dir).join("images.lock");
    let _lock = tokio::task::block_in_place(|| {
        crate::dynamo::lock::FileLock::exclusive(&lock_path, Duration::from_secs(1800))
    })
    .map_err(|e| CommandError {
        what: "take the kind images lock".into(),
        detail: e.to_string(),
    })?;
    let (cache, exe_path, release) = (
        config.cache_dir.clone(),
        exe.to_path_buf(),
        config.dynamo_version,
    );
    let artifacts =
        tokio::task::spawn_blocking(move || catalog::cluster_artifacts(&cache, &exe_path, release))
            .await
            .expect("building does not panic")?;
    let home = dir(&config.cache_dir);
    let wanted = catalog::cluster_images(&artifacts, release, &home.join("engines"))?;
    let built = images::ensure(&engine.docker, &wanted, &home.join("work")).await?;
    let mut loaded: std::collections::BTreeMap<String, String> =
        std::fs::read_to_string(loaded_path(&config.cache_dir))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
    let missing: Vec<String> = built
        .iter()
        .filter(|b| !b.reference.ends_with(catalog::WITHOUT_JQ))
        .filter(|b| loaded.get(&b.reference) != Some(&b.id))
        .map(|b| b.reference.clone())
        .collect();
    if !missing.is_empty() {
        load(cluster, &config.cache_dir, &missing).await?;
        for b in built.iter().filter(|b| missing.contains(&b.reference)) {
            loaded.insert(b.reference.clone(), b.id.clone());
        }
        let path = loaded_path(&config.cache_dir);
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&loaded).expect("plain data serializes"),
        )
        .map_err(io(&path))?;
    }
    Ok(built)
}

/// `kind load docker-image` of `references` into the nodes pods can be scheduled on (not the
/// tainted control plane, where none of the guide's pods runs), after checking that Docker's
/// disk holds them: containerd keeps each layer twice, packed and unpacked, on every node.
/// Recorded by [`load_images`] only; a direct caller, such as a test that removes and restores
/// an image, loads unrecorded.
pub async fn load(
    cluster: &KindCluster,
    cache_dir: &Path,
    references: &[String],
) -> Result<(), KindError> {
    let nodes = schedulable_nodes(&client(cluster).await?).await?;
    let engine = docker::ensure(cache_dir).await?;
    let bytes = images_size(&engine, references).await?;
    let need = crate::disk::Need {
        bytes: bytes * 2 * nodes.len() as u64,
        reckoning: format!(
            "{} images of {} × 2, packed and unpacked, × {} nodes",
            references.len(),
            crate::disk::gb(bytes),
            nodes.len()
        ),
    };
    need.check(
        &docker_root(&engine).await,
        &format!("load {} images into the kind nodes", references.len()),
        DISK_HINT,
    )?;
    let mut command = kind(&cluster.kind, cache_dir);
    command
        .args(["load", "docker-image", "--name", &cluster.name, "--nodes"])
        .arg(nodes.join(","))
        .args(references);
    let what = format!(
        "load {} images into the kind nodes {} (kind load)",
        references.len(),
        nodes.join(", ")
    );
    tokio::task::spawn_blocking(move || command::run(&mut command, &what, Bounds::long()))
        .await
        .expect("kind does not panic")?;
    Ok(())
}

/// What frees Docker's disk, for [`crate::disk::DiskError::Short`].
const DISK_HINT: &str = "`dynamo-conformance kind down` deletes the suite's cluster, `docker image prune` removes unused images";

/// Docker's data root (`docker info`'s DockerRootDir), where nodes and images take their space.
async fn docker_root(engine: &Engine) -> PathBuf {
    engine
        .docker
        .info()
        .await
        .ok()
        .and_then(|i| i.docker_root_dir)
        .map_or_else(|| PathBuf::from("/var/lib/docker"), PathBuf::from)
}

/// The nodes without a NoSchedule or NoExecute taint: where the guide's pods can run.
async fn schedulable_nodes(client: &Client) -> Result<Vec<String>, KindError> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| K8sError::api("list the kind nodes", e))?;
    Ok(nodes
        .items
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.effect != "PreferNoSchedule"))
        })
        .map(|n| n.name_any())
        .collect())
}

/// The running cluster, if there is one, without creating it.
pub async fn status(config: &Config) -> Result<Option<KindCluster>, KindError> {
    let cache_dir = &config.cache_dir;
    let Some(recorded) = std::fs::read_to_string(stamp_path(cache_dir))
        .ok()
        .and_then(|t| serde_json::from_str::<Stamp>(&t).ok())
    else {
        return Ok(None);
    };
    if docker::reach().await.is_none() {
        return Ok(None);
    }
    let kind_bin = crate::gobuild::GoProgram::output(&images::programs::KIND, cache_dir, "kind");
    if !kind_bin.is_file() {
        return Ok(None);
    }
    let cluster = KindCluster {
        name: CLUSTER_NAME.into(),
        kubeconfig: kubeconfig_path(cache_dir),
        node_image: match recorded.gpus {
            Gpus::Real => PUBLISHED_NODE_IMAGE.into(),
            Gpus::Simulated => catalog::NODE_IMAGE.into(),
        },
        gpus: recorded.gpus,
        kind: kind_bin,
        helm: None,
    };
    Ok(answers(&cluster).await.then_some(cluster))
}

/// Deletes the cluster if the suite made one, then stops a Docker engine the suite started;
/// what it removed and stopped.
pub async fn down(config: &Config) -> Result<Vec<String>, KindError> {
    let cache_dir = &config.cache_dir;
    let mut done = Vec::new();
    let kind_bin = crate::gobuild::GoProgram::output(&images::programs::KIND, cache_dir, "kind");
    if kind_bin.is_file() && docker::reach().await.is_some() {
        let (bin, cache) = (kind_bin.clone(), cache_dir.clone());
        let listed = tokio::task::spawn_blocking(move || clusters(&bin, &cache))
            .await
            .expect("kind get does not panic")?;
        if listed.iter().any(|c| c == CLUSTER_NAME) {
            delete(&kind_bin, cache_dir).await?;
            done.push(format!("deleted the kind cluster {CLUSTER_NAME}"));
        }
    }
    let _ = std::fs::remove_file(stamp_path(cache_dir));
    let _ = std::fs::remove_file(loaded_path(cache_dir));
    let cache = cache_dir.clone();
    let stopped = tokio::task::spawn_blocking(move || docker::stop(&cache))
        .await
        .expect("stopping does not panic")?;
    for daemon in stopped {
        done.push(format!("stopped {daemon}, which the suite had started"));
    }
    Ok(done)
}

/// The label kind puts on its nodes' containers, naming their cluster.
pub const NODE_LABEL: &str = "io.x-k8s.kind.cluster";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_config_disables_kinds_cni_and_pins_the_built_etcd() {
        let config: serde_json::Value =
            serde_json::from_str(&render_config(Gpus::Simulated).unwrap()).unwrap();
        assert_eq!(config["name"], CLUSTER_NAME);
        assert_eq!(config["networking"]["disableDefaultCNI"], true);
        assert_eq!(config["networking"]["apiServerAddress"], "127.0.0.1");
        let patches = config["kubeadmConfigPatches"][0].as_str().unwrap();
        assert!(patches.contains("imageTag: 3.6.16-0"), "{patches}");
        let nodes = config["nodes"].as_array().unwrap();
        let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["control-plane", "worker", "worker"]);
        for worker in &nodes[1..] {
            assert_eq!(worker["labels"]["nvidia.com/gpu.present"], "true");
        }
        assert!(
            catalog::CONTROL_PLANE_ETCD.ends_with(":3.6.16-0"),
            "the patch and the image agree"
        );
    }

    #[test]
    fn the_gpu_config_injects_the_hosts_gpus_into_the_worker() {
        let config: serde_json::Value =
            serde_json::from_str(&render_config(Gpus::Real).unwrap()).unwrap();
        let worker = &config["nodes"][1];
        assert_eq!(worker["role"], "worker");
        assert_eq!(
            worker["extraMounts"][0],
            serde_json::json!({"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"})
        );
        assert!(config["networking"].get("disableDefaultCNI").is_none());
    }

    #[test]
    fn forced_modes_are_taken_as_given() {
        assert_eq!(resolve_gpus(GpuMode::Real), Gpus::Real);
        assert_eq!(resolve_gpus(GpuMode::Simulated), Gpus::Simulated);
    }
}
