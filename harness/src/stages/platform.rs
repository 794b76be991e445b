//! The Dynamo platform: operator, etcd, NATS and nats-box, as the guide installs them with helm.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;

use super::chart::{self, Chart};
use super::{Stage, StageError, helm, storage};
use crate::cluster::Cluster;
use crate::config::{Config, ProviderKind};
use crate::k8s::wait;

/// The operator's deployment.
pub const OPERATOR: &str = "dynamo-platform-dynamo-operator-controller-manager";
/// The platform's other deployments and statefulsets.
pub const NATS_BOX: &str = "dynamo-platform-nats-box";
/// etcd's statefulset.
pub const ETCD: &str = "dynamo-platform-etcd";
/// NATS's statefulset.
pub const NATS: &str = "dynamo-platform-nats";

/// Installs the platform and waits for the operator, nats-box, etcd and NATS.
pub async fn ensure(cluster: &Cluster, config: &Config) -> Result<Vec<String>, StageError> {
    let fail = StageError::cluster(Stage::Platform);
    let ns = config.namespace.as_str();
    let offline = cluster.offline();
    let source =
        chart::source(Chart::Platform, config, offline).map_err(|e| StageError::Input {
            stage: "platform",
            reason: e.to_string(),
        })?;
    // The stand-in is shaped like the release under test by `--set` values.
    let local = source.is_stand_in();
    if local {
        chart::PLATFORM_CHART.materialize(&config.cache_dir, "platform")?;
    }
    let PlatformValues {
        file: given,
        sets,
        deviations,
    } = values(cluster, config, local).map_err(|e| StageError::Input {
        stage: "platform",
        reason: e.to_string(),
    })?;
    let release = helm::Release {
        stage: "platform",
        name: "dynamo-platform",
        chart: &source,
        values: given.as_ref().map(|v| v.path.as_path()),
        namespace: ns,
        sets,
        owned: offline,
    };
    let mut note = helm::install(cluster, release).await?;
    if local {
        note.push_str(" (the project's stand-in chart: the guide's object names, containers and ports; NGC is unreachable here)");
    }
    if let Some(given) = &given {
        note.push_str(&format!(
            "; values from {} (--platform-values)",
            given.path.display()
        ));
    }
    for deviation in deviations {
        note.push_str(&format!("; {deviation}"));
    }
    let timeout = config.ready_timeout.min(Duration::from_secs(600));
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    for name in [OPERATOR, NATS_BOX] {
        let w = wait::Wait {
            api: deployments.clone(),
            name,
            namespace: Some(ns),
            condition: "available",
            timeout,
        };
        let waited = wait::until(
            &cluster.client,
            w,
            storage::deployment_available,
            storage::describe_deployment,
        )
        .await;
        if let Err(e) = waited {
            let selector = workload_selector(cluster, ns, name).await;
            return Err(fail(
                super::explain_timeout(e, &cluster.client, ns, &selector).await,
            ));
        }
    }
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), ns);
    let mut statefulsets = vec![NATS];
    if config.dynamo_version.profile().platform_etcd {
        statefulsets.push(ETCD);
    }
    for name in statefulsets {
        let w = wait::Wait {
            api: sets.clone(),
            name,
            namespace: Some(ns),
            condition: "ready",
            timeout,
        };
        let waited = wait::until(&cluster.client, w, statefulset_ready, describe_statefulset).await;
        if let Err(e) = waited {
            let selector = workload_selector(cluster, ns, name).await;
            return Err(fail(
                super::explain_timeout(e, &cluster.client, ns, &selector).await,
            ));
        }
    }
    Ok(vec![note])
}

/// What the platform release is installed with, in Helm's order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformValues {
    /// The user's values file (`--platform-values`), passed as `--values`.
    pub file: Option<chart::Values>,
    /// The suite's `--set` values, without the keys the file sets.
    pub sets: Vec<String>,
    /// The deviations from the guide the `--set` values make.
    pub deviations: Vec<&'static str>,
}

/// The platform release's values: the user's file, and the suite's `--set` values (the guide's
/// operator image, and for the project's stand-in (`stand_in`) the shape of the release under
/// test and, on kind, of real kubelets), a key the file sets left to the file.
///
/// # Errors
/// [`chart::ChartError::Values`] when the file cannot be read or is not a mapping.
pub fn values(
    cluster: &Cluster,
    config: &Config,
    stand_in: bool,
) -> Result<PlatformValues, chart::ChartError> {
    let file = chart::platform_values(config)?;
    let (sets, deviations) = suite_values(cluster, config, stand_in);
    let sets = match &file {
        Some(file) => file.leave_to_file(sets),
        None => sets,
    };
    Ok(PlatformValues {
        file,
        sets,
        deviations,
    })
}

fn suite_values(
    cluster: &Cluster,
    config: &Config,
    stand_in: bool,
) -> (Vec<String>, Vec<&'static str>) {
    let profile = config.dynamo_version.profile();
    let local = stand_in;
    let mut sets = vec![
        "dynamo-operator.controllerManager.manager.image.repository=nvcr.io/nvidia/ai-dynamo/kubernetes-operator".to_string(),
        format!("dynamo-operator.controllerManager.manager.image.tag={}", config.dynamo_version),
    ];
    let mut deviations = Vec::new();
    if local {
        // Shape the stand-in like the release under test.
        sets.push(format!(
            "dynamo-operator.controllerManager.kubeRbacProxy={}",
            profile.operator_containers.len() > 1
        ));
        sets.push(format!("etcd.enabled={}", profile.platform_etcd));
    }
    if local && cluster.provider == ProviderKind::Kind {
        // Real kubelets: data on claims of the guide's default class, and no sidecar whose
        // image cannot be built here.
        sets.push("persistence.enabled=true".into());
        sets.push("nats.reloader.enabled=false".into());
        deviations.push("the NATS pod runs without the chart's config-reloader sidecar (its Go module, github.com/nats-io/nack, is refused by the module proxy), so it is 1/1 where the guide shows 2/2");
        if let Some(key) = cluster
            .images
            .iter()
            .find(|b| {
                b.reference
                    .starts_with(crate::images::catalog::OPERATOR_REPOSITORY)
            })
            .map(|b| b.key.clone())
        {
            sets.push(format!(
                "dynamo-operator.controllerManager.manager.imageKey={key}"
            ));
        }
    }
    (sets, deviations)
}

/// The pod selector of the platform's deployment or statefulset `name` (empty if neither exists).
pub async fn workload_selector(cluster: &Cluster, ns: &str, name: &str) -> String {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    if let Ok(Some(d)) = deployments.get_opt(name).await {
        return crate::k8s::pods::selector_of(
            d.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref()),
        );
    }
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), ns);
    if let Ok(Some(s)) = sets.get_opt(name).await {
        return crate::k8s::pods::selector_of(
            s.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref()),
        );
    }
    String::new()
}

/// A statefulset with every desired replica ready.
pub fn statefulset_ready(set: Option<&StatefulSet>) -> bool {
    let Some(s) = set else { return false };
    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= desired
}

/// Ready replicas of a statefulset, for timeout messages.
pub fn describe_statefulset(set: Option<&StatefulSet>) -> String {
    let Some(s) = set else { return "absent".into() };
    format!(
        "{}/{} ready",
        s.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    )
}
