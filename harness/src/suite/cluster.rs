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

use super::{Case, CaseCheck, Outcome};
use crate::cluster::{self, Cluster};
use crate::config::{Config, ProviderKind};
use crate::k8s::{MANAGED_BY_LABEL, wait};
use crate::stages::{Stage, crds, platform, secret, storage};

/// A check of the cluster tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCheck {
    /// The provisioner deployment is available.
    ProvisionerAvailable,
    /// Exactly one default StorageClass: the guide's `local-path`.
    DefaultStorageClass,
    /// A PVC on the default class binds once a pod uses it.
    PvcBinds,
    /// The Dynamo CRDs are established and serve v1alpha1.
    CrdsEstablished,
    /// The operator deployment is available with the release's containers.
    OperatorAvailable,
    /// etcd (where the release runs it) and NATS are ready.
    EtcdAndNatsRunning,
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
    fn stage(self) -> Stage {
        match self {
            ClusterCheck::ProvisionerAvailable
            | ClusterCheck::DefaultStorageClass
            | ClusterCheck::PvcBinds => Stage::Storage,
            ClusterCheck::CrdsEstablished => Stage::Crds,
            ClusterCheck::OperatorAvailable
            | ClusterCheck::EtcdAndNatsRunning
            | ClusterCheck::ServicesListen => Stage::Platform,
            ClusterCheck::SecretPresent => Stage::Secret,
            ClusterCheck::GraphReady
            | ClusterCheck::ComponentPods
            | ClusterCheck::FrontendService
            | ClusterCheck::PodLogs => Stage::Graph,
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
    let no_volumes = (config.provider == ProviderKind::Local)
        .then(|| "the local provider has no real volumes: kwok simulates pods and no kubelet mounts a PVC".to_string());
    vec![
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
    stages: Mutex<BTreeMap<Stage, Result<Vec<String>, String>>>,
}

static SESSION: OnceLock<Result<Session, String>> = OnceLock::new();

pub(super) async fn session(config: &Config, exe: &Path) -> Result<&'static Session, String> {
    if let Some(session) = SESSION.get() {
        return session.as_ref().map_err(Clone::clone);
    }
    let connected = cluster::connect(config, exe)
        .await
        .map(|cluster| Session {
            cluster,
            stages: Mutex::new(BTreeMap::new()),
        })
        .map_err(|e| e.to_string());
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

pub(super) async fn ensure(
    session: &Session,
    stage: Stage,
    config: &Config,
) -> Result<Vec<String>, String> {
    if let Some(done) = session.stages.lock().expect("stage lock").get(&stage) {
        return done.clone();
    }
    let result = stage
        .ensure(&session.cluster, config)
        .await
        .map_err(|e| e.to_string());
    session
        .stages
        .lock()
        .expect("stage lock")
        .insert(stage, result.clone());
    result
}

/// Runs one cluster check after bringing up the stage it needs.
pub async fn run(check: ClusterCheck, config: &Config, exe: &Path) -> Outcome {
    let session = match session(config, exe).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cluster unavailable: {e}")),
    };
    let notes = match ensure(session, check.stage(), config).await {
        Ok(notes) => notes,
        Err(e) => return Outcome::Failed(e),
    };
    let mut notes = notes;
    let cluster = &session.cluster;
    let problems = match check {
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
        ClusterCheck::CrdsEstablished => crds_established(cluster).await,
        ClusterCheck::OperatorAvailable => operator_available(cluster, config).await,
        ClusterCheck::EtcdAndNatsRunning => etcd_and_nats_running(cluster, config).await,
        ClusterCheck::ServicesListen => services_listen(cluster, config).await,
        ClusterCheck::GraphReady => super::graph::graph_ready(cluster, config).await,
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
        Stage::Graph => super::graph::graph_provenance(cluster, config),
        _ => cluster.provenance(),
    };
    if problems.is_empty() {
        Outcome::Passed(format!("{}; {provenance}", notes.join("; ")))
    } else {
        Outcome::Failed(format!("{}\n{provenance}", problems.join("\n")))
    }
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
        Ok(d) => vec![format!(
            "deployment {}/{} is not available: {}",
            storage::NAMESPACE,
            storage::DEPLOYMENT,
            storage::describe_deployment(d.as_ref())
        )],
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

async fn crds_established(cluster: &Cluster) -> Vec<String> {
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
                if !crd
                    .spec
                    .versions
                    .iter()
                    .any(|v| v.name == "v1alpha1" && v.served)
                {
                    problems.push(format!("CRD {name} does not serve v1alpha1"));
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
            Ok(set) => problems.push(format!(
                "statefulset {name} is not ready: {}",
                platform::describe_statefulset(set.as_ref())
            )),
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
            "containers": [{"name": "use", "image": "busybox:1.36", "command": ["sh", "-c", "touch /data/ok && sleep 5"],
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
