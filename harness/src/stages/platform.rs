//! The Dynamo platform: operator, etcd, NATS and nats-box, as the guide installs them with helm.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::Api;

use super::{Stage, StageError, helm, secret, storage};
use crate::cluster::Cluster;
use crate::config::{Config, ProviderKind};
use crate::k8s::{apply, wait};

const LOCAL_PLATFORM: &str = include_str!("../../../fixtures/local/platform/platform.yaml");
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
    let note = if cluster.provider == ProviderKind::Local {
        secret::ensure_namespace(cluster, ns).await.map_err(&fail)?;
        let objects = local_platform(config).map_err(&fail)?;
        apply::apply_objects(
            &cluster.client,
            "local/platform/platform.yaml",
            objects,
            ns,
            "platform",
        )
        .await
        .map_err(&fail)?;
        "the project's stand-in for the dynamo-platform chart (same object names, containers and ports, applied without helm): the NGC chart cannot be downloaded here".to_string()
    } else {
        let version = config.dynamo_version.as_str();
        let chart = format!("{}/dynamo-platform-{version}.tgz", helm::NGC_CHARTS);
        let sets = [
            "dynamo-operator.controllerManager.manager.image.repository=nvcr.io/nvidia/ai-dynamo/kubernetes-operator".to_string(),
            format!("dynamo-operator.controllerManager.manager.image.tag={version}"),
        ];
        helm::install("platform", "dynamo-platform", &chart, ns, &sets).await?
    };
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
        wait::until(
            &cluster.client,
            w,
            storage::deployment_available,
            storage::describe_deployment,
        )
        .await
        .map_err(&fail)?;
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
        wait::until(&cluster.client, w, statefulset_ready, describe_statefulset)
            .await
            .map_err(&fail)?;
    }
    Ok(vec![note])
}

/// The stand-in's objects, shaped as the configured release's chart: its operator containers, etcd or not.
fn local_platform(config: &Config) -> Result<Vec<serde_json::Value>, crate::k8s::K8sError> {
    let profile = config.dynamo_version.profile();
    let mut objects = apply::parse_documents("local/platform/platform.yaml", LOCAL_PLATFORM)?;
    objects.retain(|o| {
        profile.platform_etcd
            || !o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with(ETCD)
    });
    for object in &mut objects {
        if object["metadata"]["name"] == OPERATOR
            && let Some(containers) = object
                .pointer_mut("/spec/template/spec/containers")
                .and_then(|c| c.as_array_mut())
        {
            containers.retain(|c| {
                profile
                    .operator_containers
                    .contains(&c["name"].as_str().unwrap_or_default())
            });
        }
    }
    Ok(objects)
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
