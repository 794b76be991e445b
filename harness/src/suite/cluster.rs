//! The cluster tier's cases: storage and secret as the guide leaves them, on the configured provider.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use super::blocker::{Need, Unmet, blockers};
use super::{Case, CaseCheck, Outcome};
use crate::cluster::{self, Cluster};
use crate::config::{Config, ProviderKind};
use crate::k8s::{MANAGED_BY_LABEL, wait};
use crate::stages::{Stage, crds, platform, secret, storage};

/// A check of the cluster tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCheck {
    /// GPU nodes advertise allocatable `nvidia.com/gpu` (the GPU gate).
    GpusAdvertised,
    /// The GPU operator's validator passed on every GPU node (the GPU gate).
    GpuOperatorValidated,
    /// A pod that asks for one GPU sees exactly one (the GPU gate).
    OneGpuPod,
    /// The provisioner deployment is available.
    ProvisionerAvailable,
    /// Exactly one default StorageClass: the guide's `local-path`.
    DefaultStorageClass,
    /// A PVC on the default class binds once a pod uses it.
    PvcBinds,
    /// The Dynamo CRDs are established and serve v1alpha1; the DynamoGraphDeployment CRD serves
    /// v1beta1 too from 1.2 ([`crate::release::GraphCrd`]).
    CrdsEstablished,
    /// The operator deployment is available with the release's containers.
    OperatorAvailable,
    /// etcd (where the release runs it) and NATS are ready.
    EtcdAndNatsRunning,
    /// etcd's and NATS's claims are bound on the default StorageClass.
    ClaimsBound,
    /// The platform's services listen on the guide's ports.
    ServicesListen,
    /// The `hf-token-secret` exists with its key.
    SecretPresent,
    /// The guide's graph reaches the release's ready state.
    GraphReady,
    /// Every component is available, its pods Ready with the GPU limit and runtime class the graph asks for.
    ComponentPods,
    /// The frontend Service resolves to a ready pod on port 8000.
    FrontendService,
    /// Every component pod's log is served through the API server.
    PodLogs,
}

impl ClusterCheck {
    /// The guide's step the check needs applied first; none for the GPU gate, which precedes them.
    fn stage(self) -> Option<Stage> {
        match self {
            ClusterCheck::GpusAdvertised
            | ClusterCheck::GpuOperatorValidated
            | ClusterCheck::OneGpuPod => None,
            ClusterCheck::ProvisionerAvailable
            | ClusterCheck::DefaultStorageClass
            | ClusterCheck::PvcBinds => Some(Stage::Storage),
            ClusterCheck::CrdsEstablished => Some(Stage::Crds),
            ClusterCheck::OperatorAvailable
            | ClusterCheck::EtcdAndNatsRunning
            | ClusterCheck::ClaimsBound
            | ClusterCheck::ServicesListen => Some(Stage::Platform),
            ClusterCheck::SecretPresent => Some(Stage::Secret),
            ClusterCheck::GraphReady
            | ClusterCheck::ComponentPods
            | ClusterCheck::FrontendService
            | ClusterCheck::PodLogs => Some(Stage::Graph),
        }
    }
}

/// The cluster tier's cases, in the guide's order.
pub fn cases(config: &Config) -> Vec<Case> {
    let case = |name: &str, check, skip: Option<String>| Case {
        name: name.to_string(),
        check: CaseCheck::Cluster(check),
        skip,
    };
    let local = config.provider == ProviderKind::Local;
    let no_volumes = local.then(|| {
        "the local provider has no real volumes: kwok simulates pods and no kubelet mounts a PVC"
            .to_string()
    });
    let simulated_gpus = match config.provider {
        ProviderKind::Local => true,
        ProviderKind::Kind => {
            crate::cluster::kind::resolve_gpus(config.gpus) == crate::cluster::kind::Gpus::Simulated
        }
        ProviderKind::Existing => config.gpus == crate::config::GpuMode::Simulated,
    };
    let no_gpu_operator = simulated_gpus.then(|| {
        "GPUs are simulated here: there is no GPU operator to validate them (on kind a device plugin advertises them, on local kwok nodes do)"
            .to_string()
    });
    let no_containers = local.then(|| {
        "the local provider runs no container: kwok simulates pods, so no pod can look at its GPU"
            .to_string()
    });
    vec![
        case(
            "guide::gpus::advertised",
            ClusterCheck::GpusAdvertised,
            None,
        ),
        case(
            "guide::gpus::operator_validated",
            ClusterCheck::GpuOperatorValidated,
            no_gpu_operator,
        ),
        case("guide::gpus::one_gpu_pod", ClusterCheck::OneGpuPod, no_containers),
        case(
            "guide::storage::provisioner_available",
            ClusterCheck::ProvisionerAvailable,
            None,
        ),
        case(
            "guide::storage::default_storage_class",
            ClusterCheck::DefaultStorageClass,
            None,
        ),
        case(
            "guide::storage::pvc_binds",
            ClusterCheck::PvcBinds,
            no_volumes,
        ),
        case(
            "guide::crds::established",
            ClusterCheck::CrdsEstablished,
            None,
        ),
        case(
            "guide::platform::operator_available",
            ClusterCheck::OperatorAvailable,
            None,
        ),
        case(
            "guide::platform::etcd_and_nats_running",
            ClusterCheck::EtcdAndNatsRunning,
            None,
        ),
        case(
            "guide::platform::claims_bound",
            ClusterCheck::ClaimsBound,
            (config.provider == ProviderKind::Local).then(|| {
                "the local provider has no real volumes: its stand-in platform keeps etcd's and NATS's data in emptyDir"
                    .to_string()
            }),
        ),
        case(
            "guide::platform::services_listen",
            ClusterCheck::ServicesListen,
            None,
        ),
        case(
            "guide::secret::hf_token_secret",
            ClusterCheck::SecretPresent,
            None,
        ),
        case("guide::graph::ready", ClusterCheck::GraphReady, None),
        case(
            "guide::graph::component_pods",
            ClusterCheck::ComponentPods,
            None,
        ),
        case(
            "guide::graph::frontend_service",
            ClusterCheck::FrontendService,
            None,
        ),
        case("guide::graph::pod_logs", ClusterCheck::PodLogs, None),
    ]
}

pub(super) struct Session {
    pub(super) cluster: Cluster,
    stages: Mutex<BTreeMap<Stage, Vec<String>>>,
    /// This process counts as a run under way (nothing kept is parked meanwhile).
    _activity: crate::ledger::Activity,
}

static SESSION: OnceLock<Result<Session, String>> = OnceLock::new();

/// The cluster this process connected to, if it did.
pub(super) fn current() -> Option<&'static Cluster> {
    SESSION
        .get()
        .and_then(|s| s.as_ref().ok())
        .map(|s| &s.cluster)
}

pub(super) async fn session(config: &Config, exe: &Path) -> Result<&'static Session, String> {
    if let Some(session) = SESSION.get() {
        return session.as_ref().map_err(Clone::clone);
    }
    // Waits only while the local agent parks the kept graph (seconds).
    let activity = tokio::task::block_in_place(|| {
        crate::ledger::begin(&config.cache_dir)?;
        crate::ledger::Activity::hold(&config.cache_dir)
    });
    let connected = match activity {
        Ok(activity) => cluster::connect(config, exe)
            .await
            .map(|cluster| Session {
                cluster,
                stages: Mutex::new(BTreeMap::new()),
                _activity: activity,
            })
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let _ = SESSION.set(connected);
    SESSION
        .get()
        .expect("just set")
        .as_ref()
        .map_err(Clone::clone)
}

/// The provenance of the cluster this process connected to, if any.
pub fn provenance() -> Option<String> {
    SESSION
        .get()
        .and_then(|s| s.as_ref().ok())
        .map(|s| s.cluster.provenance())
}

/// Applies `stage` for `case`, once per process. A failure is recorded against the case that met
/// it first ([`blocker`]): that case fails with the cause, every later one is blocked by it.
pub(super) async fn ensure(
    session: &Session,
    stage: Stage,
    config: &Config,
    case: &str,
) -> Result<Vec<String>, Unmet> {
    if let Some(done) = session.stages.lock().expect("stage lock").get(&stage) {
        return Ok(done.clone());
    }
    if let Some(blocker) = blockers().find(Need::Stage(stage)) {
        return Err(Unmet::Blocked(blocker));
    }
    match stage.ensure(&session.cluster, config).await {
        Ok(notes) => {
            session
                .stages
                .lock()
                .expect("stage lock")
                .insert(stage, notes.clone());
            Ok(notes)
        }
        Err(e) => {
            // The stage named in the error may be a prerequisite of `stage`.
            let failed = Stage::named(e.stage()).unwrap_or(stage);
            Err(blockers().fail(case, Need::Stage(failed), e.to_string()))
        }
    }
}

/// The cluster for `case`: connected once per process, its failure recorded like a stage's.
pub(super) async fn session_for(
    config: &Config,
    exe: &Path,
    case: &str,
) -> Result<&'static Session, Unmet> {
    if let Some(blocker) = blockers().find(Need::Cluster) {
        return Err(Unmet::Blocked(blocker));
    }
    session(config, exe)
        .await
        .map_err(|e| blockers().fail(case, Need::Cluster, format!("cluster unavailable: {e}")))
}

/// Runs one cluster check after bringing up the stage it needs.
pub async fn run(check: ClusterCheck, case: &str, config: &Config, exe: &Path) -> Outcome {
    let session = match session_for(config, exe, case).await {
        Ok(s) => s,
        Err(unmet) => return unmet.into(),
    };
    let notes = match check.stage() {
        Some(stage) => match ensure(session, stage, config, case).await {
            Ok(notes) => notes,
            Err(unmet) => return unmet.into(),
        },
        None => Vec::new(),
    };
    let mut notes = notes;
    let cluster = &session.cluster;
    let problems = match check {
        ClusterCheck::GpusAdvertised => gpus_advertised(cluster).await,
        ClusterCheck::GpuOperatorValidated => gpu_operator_validated(cluster).await,
        ClusterCheck::OneGpuPod => {
            let gpus = if cluster.simulation.gpus.is_some() {
                crate::cluster::kind::Gpus::Simulated
            } else {
                crate::cluster::kind::Gpus::Real
            };
            if let Err(e) = secret::ensure_namespace(cluster, &config.namespace).await {
                return Outcome::Failed(e.to_string());
            }
            crate::cluster::kind::gpu::run_gate_pod(&cluster.client, &config.namespace, gpus).await
        }
        ClusterCheck::ClaimsBound => claims_bound(cluster, config).await,
        ClusterCheck::ProvisionerAvailable => provisioner_available(cluster).await,
        ClusterCheck::DefaultStorageClass => default_storage_class(cluster).await,
        ClusterCheck::PvcBinds => pvc_binds(cluster, config).await,
        ClusterCheck::SecretPresent => {
            notes.push(format!(
                "note: the graph's envFromSecret turns the guide's key '{}' into an environment variable named '{}'; \
                 Hugging Face's libraries read HF_TOKEN, so a gated model would not download with the guide's secret as written",
                secret::KEY,
                secret::KEY
            ));
            secret_present(cluster, config).await
        }
        ClusterCheck::CrdsEstablished => crds_established(cluster, config).await,
        ClusterCheck::OperatorAvailable => operator_available(cluster, config).await,
        ClusterCheck::EtcdAndNatsRunning => etcd_and_nats_running(cluster, config).await,
        ClusterCheck::ServicesListen => services_listen(cluster, config).await,
        ClusterCheck::GraphReady => super::graph::graph_ready(cluster, config, &mut notes).await,
        ClusterCheck::ComponentPods => {
            super::graph::component_pods(cluster, config, &mut notes).await
        }
        ClusterCheck::FrontendService => super::graph::frontend_service(cluster, config)
            .await
            .err()
            .into_iter()
            .collect(),
        ClusterCheck::PodLogs => super::graph::pod_logs(cluster, config).await,
    };
    let provenance = match check.stage() {
        Some(Stage::Graph) => super::graph::graph_provenance(cluster, config),
        _ => cluster.provenance(),
    };
    if problems.is_empty() {
        Outcome::Passed(format!("{}; {provenance}", notes.join("; ")))
    } else {
        Outcome::Failed(format!("{}\n{provenance}", problems.join("\n")))
    }
}

async fn gpus_advertised(cluster: &Cluster) -> Vec<String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    match nodes.list(&kube::api::ListParams::default()).await {
        Err(e) => vec![format!("cannot list nodes: {e}")],
        Ok(list) => crate::cluster::kind::gpu::advertised(&list.items),
    }
}

async fn gpu_operator_validated(cluster: &Cluster) -> Vec<String> {
    use crate::cluster::kind::gpu;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
    let validators: Api<Pod> = Api::namespaced(cluster.client.clone(), gpu::OPERATOR_NAMESPACE);
    let params = kube::api::ListParams::default();
    match (
        nodes.list(&params).await,
        validators
            .list(&params.clone().labels(gpu::VALIDATOR_SELECTOR))
            .await,
    ) {
        (Ok(nodes), Ok(pods)) => gpu::validated(&nodes.items, &pods.items),
        (Err(e), _) => vec![format!("cannot list nodes: {e}")],
        (_, Err(e)) => vec![format!(
            "cannot list the GPU operator's validators in {}: {e}",
            gpu::OPERATOR_NAMESPACE
        )],
    }
}

/// The claims each platform statefulset's templates make (`<template>-<set>-<ordinal>`) must be
/// Bound, on the default StorageClass.
async fn claims_bound(cluster: &Cluster, config: &Config) -> Vec<String> {
    let ns = &config.namespace;
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), ns);
    let classes: Api<StorageClass> = Api::all(cluster.client.clone());
    let default = classes
        .list(&kube::api::ListParams::default())
        .await
        .ok()
        .and_then(|l| l.items.into_iter().find(is_default))
        .and_then(|c| c.metadata.name);
    let mut names = vec![platform::NATS];
    if config.dynamo_version.profile().platform_etcd {
        names.push(platform::ETCD);
    }
    let mut problems = Vec::new();
    for name in names {
        let set = match read_named(&sets, "statefulset", ns, name).await {
            Ok(set) => set,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let spec = set.spec.unwrap_or_default();
        let templates = spec.volume_claim_templates.unwrap_or_default();
        if templates.is_empty() {
            problems.push(format!(
                "statefulset {ns}/{name} keeps its data in no claim (no volumeClaimTemplates)"
            ));
        }
        for template in templates {
            let template_name = template.metadata.name.unwrap_or_default();
            for ordinal in 0..spec.replicas.unwrap_or(1) {
                let claim = format!("{template_name}-{name}-{ordinal}");
                match claims.get_opt(&claim).await {
                    Err(e) => problems.push(format!("cannot read claim {ns}/{claim}: {e}")),
                    Ok(None) => problems.push(format!("claim {ns}/{claim} does not exist")),
                    Ok(Some(c)) => {
                        let phase = c.status.and_then(|s| s.phase).unwrap_or_default();
                        let class = c.spec.and_then(|s| s.storage_class_name);
                        if phase != "Bound" {
                            problems.push(format!("claim {ns}/{claim} is {phase}, not Bound"));
                        }
                        if class != default {
                            problems.push(format!(
                                "claim {ns}/{claim} is on class {class:?}, not the default {default:?}"
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

async fn provisioner_available(cluster: &Cluster) -> Vec<String> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), storage::NAMESPACE);
    match api.get_opt(storage::DEPLOYMENT).await {
        Err(e) => vec![format!(
            "cannot read deployment {}/{}: {e}",
            storage::NAMESPACE,
            storage::DEPLOYMENT
        )],
        Ok(d) if storage::deployment_available(d.as_ref()) => Vec::new(),
        Ok(d) => {
            let mut problems = vec![format!(
                "deployment {}/{} is not available: {}",
                storage::NAMESPACE,
                storage::DEPLOYMENT,
                storage::describe_deployment(d.as_ref())
            )];
            problems.extend(
                crate::k8s::pods::explain(
                    &cluster.client,
                    storage::NAMESPACE,
                    "app=local-path-provisioner",
                )
                .await,
            );
            problems
        }
    }
}

fn is_default(class: &StorageClass) -> bool {
    let annotations = class.metadata.annotations.clone().unwrap_or_default();
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|key| annotations.get(*key).map(String::as_str) == Some("true"))
}

/// Exactly one default class, named `local-path`, with the guide's provisioner, binding mode and reclaim policy.
pub fn storage_class_problems(classes: &[StorageClass]) -> Vec<String> {
    let defaults: Vec<&StorageClass> = classes.iter().filter(|c| is_default(c)).collect();
    let names: Vec<String> = defaults
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    match defaults.as_slice() {
        [] => vec![format!(
            "no default StorageClass (classes: {})",
            classes
                .iter()
                .map(|c| c.metadata.name.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        )],
        [class] => {
            let mut problems = Vec::new();
            let mut expect = |what: &str, expected: &str, observed: Option<&str>| {
                if observed != Some(expected) {
                    problems.push(format!(
                        "default StorageClass {what}: expected {expected}, observed {observed:?}"
                    ));
                }
            };
            expect(
                "name",
                storage::STORAGE_CLASS,
                class.metadata.name.as_deref(),
            );
            expect(
                "provisioner",
                "rancher.io/local-path",
                Some(class.provisioner.as_str()),
            );
            expect(
                "volumeBindingMode",
                "WaitForFirstConsumer",
                class.volume_binding_mode.as_deref(),
            );
            expect("reclaimPolicy", "Delete", class.reclaim_policy.as_deref());
            problems
        }
        _ => vec![format!(
            "{} default StorageClasses, expected exactly one: {}",
            names.len(),
            names.join(", ")
        )],
    }
}

async fn default_storage_class(cluster: &Cluster) -> Vec<String> {
    let api: Api<StorageClass> = Api::all(cluster.client.clone());
    match api.list(&Default::default()).await {
        Ok(list) => storage_class_problems(&list.items),
        Err(e) => vec![format!("cannot list StorageClasses: {e}")],
    }
}

async fn crds_established(cluster: &Cluster, config: &Config) -> Vec<String> {
    let graph_crd = config.dynamo_version.release().graph_crd;
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let mut problems = Vec::new();
    for name in crds::CRDS {
        match api.get_opt(name).await {
            Err(e) => problems.push(format!("cannot read CRD {name}: {e}")),
            Ok(None) => problems.push(format!("CRD {name} does not exist")),
            Ok(Some(crd)) => {
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if !established {
                    problems.push(format!(
                        "CRD {name} is not established: {}",
                        crds::describe_crd(Some(&crd))
                    ));
                }
                let mut wanted = vec!["v1alpha1"];
                if name == crds::CRDS[0] && graph_crd.serves_v1beta1() {
                    wanted.push("v1beta1");
                }
                for version in wanted {
                    if !crd
                        .spec
                        .versions
                        .iter()
                        .any(|v| v.name == version && v.served)
                    {
                        problems.push(format!(
                            "CRD {name} does not serve {version}{}",
                            if version == "v1beta1" {
                                format!(
                                    " (Dynamo {}'s operator serves it from 1.2, ai-dynamo/dynamo#8647)",
                                    config.dynamo_version
                                )
                            } else {
                                String::new()
                            }
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// The named object, or one line saying why it cannot be had.
pub(super) async fn read_named<K>(
    api: &Api<K>,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<K, String>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Err(e) => Err(format!("cannot read {kind} {ns}/{name}: {e}")),
        Ok(None) => Err(format!("{kind} {ns}/{name} does not exist")),
        Ok(Some(object)) => Ok(object),
    }
}

async fn operator_available(cluster: &Cluster, config: &Config) -> Vec<String> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &config.namespace);
    let ns = &config.namespace;
    match read_named(&api, "deployment", ns, platform::OPERATOR).await {
        Err(problem) => vec![problem],
        Ok(d) => {
            let mut problems = Vec::new();
            if !storage::deployment_available(Some(&d)) {
                problems.push(format!(
                    "deployment {ns}/{} is not available: {}",
                    platform::OPERATOR,
                    storage::describe_deployment(Some(&d))
                ));
                let selector = platform::workload_selector(cluster, ns, platform::OPERATOR).await;
                problems.extend(crate::k8s::pods::explain(&cluster.client, ns, &selector).await);
            } else if let Some(why) = crate::stages::graph::rollout_unfinished(&d, 1) {
                // Available on an old pod while the new one fails (a chart upgrade gone wrong).
                problems.push(format!(
                    "deployment {ns}/{} has not finished rolling out: {why}",
                    platform::OPERATOR
                ));
                let selector = platform::workload_selector(cluster, ns, platform::OPERATOR).await;
                problems.extend(crate::k8s::pods::explain(&cluster.client, ns, &selector).await);
            }
            let containers: Vec<String> = d
                .spec
                .and_then(|s| s.template.spec)
                .map(|s| s.containers.into_iter().map(|c| c.name).collect())
                .unwrap_or_default();
            let expected = config.dynamo_version.profile().operator_containers;
            if containers != expected {
                problems.push(format!(
                    "operator containers: expected {expected:?} (Dynamo {}), observed {containers:?}",
                    config.dynamo_version
                ));
            }
            problems
        }
    }
}

async fn etcd_and_nats_running(cluster: &Cluster, config: &Config) -> Vec<String> {
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &config.namespace);
    let mut names = vec![platform::NATS];
    if config.dynamo_version.profile().platform_etcd {
        names.push(platform::ETCD);
    }
    let mut problems = Vec::new();
    for name in names {
        match api.get_opt(name).await {
            Err(e) => problems.push(format!("cannot read statefulset {name}: {e}")),
            Ok(set) if platform::statefulset_ready(set.as_ref()) => {}
            Ok(set) => {
                problems.push(format!(
                    "statefulset {name} is not ready: {}",
                    platform::describe_statefulset(set.as_ref())
                ));
                let ns = &config.namespace;
                let selector = platform::workload_selector(cluster, ns, name).await;
                problems.extend(crate::k8s::pods::explain(&cluster.client, ns, &selector).await);
            }
        }
    }
    problems
}

/// The guide's services and the ports it shows them on.
pub fn expected_services(etcd: bool) -> Vec<(&'static str, &'static [i32])> {
    let mut services: Vec<(&'static str, &'static [i32])> = vec![
        ("dynamo-platform-nats", &[4222]),
        ("dynamo-platform-nats-headless", &[4222, 8222]),
    ];
    if etcd {
        services.push(("dynamo-platform-etcd", &[2379, 2380]));
        services.push(("dynamo-platform-etcd-headless", &[2379, 2380]));
    }
    services
}

async fn services_listen(cluster: &Cluster, config: &Config) -> Vec<String> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), &config.namespace);
    let mut problems = Vec::new();
    for (name, ports) in expected_services(config.dynamo_version.profile().platform_etcd) {
        match api.get_opt(name).await {
            Err(e) => problems.push(format!("cannot read service {name}: {e}")),
            Ok(None) => problems.push(format!("service {name} does not exist")),
            Ok(Some(service)) => {
                let have: Vec<i32> = service
                    .spec
                    .and_then(|s| s.ports)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.port)
                    .collect();
                let missing: Vec<&i32> = ports.iter().filter(|p| !have.contains(p)).collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "service {name}: expected ports {ports:?}, observed {have:?}"
                    ));
                }
            }
        }
    }
    problems
}

async fn secret_present(cluster: &Cluster, config: &Config) -> Vec<String> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), &config.namespace);
    match api.get_opt(secret::SECRET).await {
        Err(e) => vec![format!(
            "cannot read secret {}/{}: {e}",
            config.namespace,
            secret::SECRET
        )],
        Ok(None) => vec![format!(
            "secret {}/{} does not exist",
            config.namespace,
            secret::SECRET
        )],
        Ok(Some(s)) => {
            let present = s
                .data
                .as_ref()
                .and_then(|d| d.get(secret::KEY))
                .is_some_and(|v| !v.0.is_empty());
            if present {
                Vec::new()
            } else {
                vec![format!(
                    "secret {}/{} has no non-empty key '{}'",
                    config.namespace,
                    secret::SECRET,
                    secret::KEY
                )]
            }
        }
    }
}

/// Creates a PVC on the default class and a pod that mounts it, waits for the claim to bind, then deletes both.
async fn pvc_binds(cluster: &Cluster, config: &Config) -> Vec<String> {
    let ns = &config.namespace;
    if let Err(e) = secret::ensure_namespace(cluster, ns).await {
        return vec![e.to_string()];
    }
    let name = format!("dynamo-conformance-pvc-{}", std::process::id());
    let labels = json!({ MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1 });
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    }))
    .expect("a valid claim");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "use", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "touch /data/ok && ls /data/ok"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}]
        }
    }))
    .expect("a valid pod");
    let mut problems = Vec::new();
    if let Err(e) = claims.create(&PostParams::default(), &claim).await {
        return vec![format!("cannot create PVC {ns}/{name}: {e}")];
    }
    if let Err(e) = pods.create(&PostParams::default(), &pod).await {
        problems.push(format!("cannot create pod {ns}/{name}: {e}"));
    } else {
        let bound = wait::until(
            &cluster.client,
            wait::Wait {
                api: claims.clone(),
                name: &name,
                namespace: Some(ns),
                condition: "bound",
                timeout: config.ready_timeout.min(Duration::from_secs(180)),
            },
            |c: Option<&PersistentVolumeClaim>| {
                c.and_then(|c| c.status.as_ref())
                    .and_then(|s| s.phase.as_deref())
                    == Some("Bound")
            },
            |c: Option<&PersistentVolumeClaim>| {
                format!(
                    "phase {:?}",
                    c.and_then(|c| c.status.as_ref())
                        .and_then(|s| s.phase.clone())
                )
            },
        )
        .await;
        if let Err(e) = bound {
            problems.push(e.to_string());
        } else {
            // Bound is the provisioner's half; the kubelet's half is the pod writing to it.
            let wrote = wait::until(
                &cluster.client,
                wait::Wait {
                    api: pods.clone(),
                    name: &name,
                    namespace: Some(ns),
                    condition: "done writing to the claim",
                    timeout: config.ready_timeout.min(Duration::from_secs(180)),
                },
                |p: Option<&Pod>| {
                    matches!(
                        p.and_then(|p| p.status.as_ref())
                            .and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                },
                |p: Option<&Pod>| p.map(crate::k8s::pods::describe).unwrap_or_default(),
            )
            .await;
            match wrote {
                Err(e) => problems.push(e.to_string()),
                Ok(pod)
                    if pod.status.as_ref().and_then(|s| s.phase.as_deref())
                        != Some("Succeeded") =>
                {
                    problems.push(format!(
                        "the pod could not write to the bound claim: {}",
                        crate::k8s::pods::describe(&pod)
                    ));
                }
                Ok(_) => {}
            }
        }
    }
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    let _ = claims.delete(&name, &DeleteParams::default()).await;
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, default: bool, mode: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}},
            "provisioner": "rancher.io/local-path",
            "volumeBindingMode": mode,
            "reclaimPolicy": "Delete"
        }))
        .unwrap()
    }

    #[test]
    fn the_guides_class_as_the_only_default_passes() {
        let classes = [
            class("local-path", true, "WaitForFirstConsumer"),
            class("standard", false, "Immediate"),
        ];
        assert!(storage_class_problems(&classes).is_empty());
    }

    #[test]
    fn no_default_is_named() {
        let problems =
            storage_class_problems(&[class("local-path", false, "WaitForFirstConsumer")]);
        assert_eq!(problems, ["no default StorageClass (classes: local-path)"]);
    }

    #[test]
    fn two_defaults_are_named() {
        let problems = storage_class_problems(&[
            class("local-path", true, "WaitForFirstConsumer"),
            class("standard", true, "Immediate"),
        ]);
        assert_eq!(
            problems,
            ["2 default StorageClasses, expected exactly one: local-path, standard"]
        );
    }

    #[test]
    fn a_wrong_binding_mode_is_named() {
        let problems = storage_class_problems(&[class("local-path", true, "Immediate")]);
        assert_eq!(
            problems,
            [
                r#"default StorageClass volumeBindingMode: expected WaitForFirstConsumer, observed Some("Immediate")"#
            ]
        );
    }
}
