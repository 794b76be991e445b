//! Storage: the local-path provisioner, and the guide's `local-path` StorageClass made the default.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams};

use super::{Stage, StageError};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::k8s::{self, MANAGED_BY_LABEL, apply, wait};

/// The guide's provisioner manifest.
pub const PROVISIONER_URL: &str = "https://raw.githubusercontent.com/rancher/local-path-provisioner/v0.0.32/deploy/local-path-storage.yaml";
const LOCAL_PROVISIONER: &str =
    include_str!("../../../fixtures/local/cluster/local-path-storage.yaml");
const GUIDE_STORAGE_CLASS: &str = include_str!("../../../fixtures/guide/storage-class.yaml");
/// The provisioner's namespace and deployment.
pub const NAMESPACE: &str = "local-path-storage";
/// The provisioner's deployment.
pub const DEPLOYMENT: &str = "local-path-provisioner";
/// The guide's StorageClass.
pub const STORAGE_CLASS: &str = "local-path";

/// How long the provisioner manifest's download may take (a firewall that drops packets
/// would otherwise hold the stage for the operating system's TCP timeout).
const DOWNLOAD_WAIT: Duration = Duration::from_secs(30);

/// The provisioner manifest the stage applies and where it came from: the file named by
/// `provisioner_manifest`, the project's copy on offline providers, else the guide's URL.
pub(crate) async fn provisioner_manifest(
    cluster: &Cluster,
    config: &Config,
) -> Result<(String, &'static str), StageError> {
    let input = |reason: String| StageError::Input {
        stage: "storage",
        reason,
    };
    if let Some(path) = &config.provisioner_manifest {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input(format!(
                "cannot read the provisioner manifest {}: {e}",
                path.display()
            ))
        })?;
        return Ok((text, "the local copy named by provisioner_manifest"));
    }
    if cluster.offline() {
        return Ok((
            LOCAL_PROVISIONER.to_string(),
            "the project's copy of the guide's manifest (GitHub is out of reach here)",
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(DOWNLOAD_WAIT)
        .build()
        .map_err(|e| input(format!("cannot make an HTTP client: {e}")))?;
    let response = client
        .get(PROVISIONER_URL)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| {
            input(format!(
                "cannot download {PROVISIONER_URL}: {e}; without access to GitHub, give a copy: --provisioner-manifest FILE"
            ))
        })?;
    let text = response
        .text()
        .await
        .map_err(|e| input(format!("cannot read {PROVISIONER_URL}: {e}")))?;
    Ok((text, "the guide's URL"))
}

/// Applies the provisioner and the guide's StorageClass, then waits for the provisioner.
pub async fn ensure(cluster: &Cluster, config: &Config) -> Result<Vec<String>, StageError> {
    let fail = StageError::cluster(Stage::Storage);
    let mut notes = Vec::new();
    let (manifest, source) = provisioner_manifest(cluster, config).await?;
    notes.push(format!("provisioner from {source}"));
    let classes: Api<StorageClass> = Api::all(cluster.client.clone());
    let mut objects =
        apply::parse_documents("local-path-storage.yaml", &manifest).map_err(&fail)?;
    // Once the guide's class exists, the manifest's own `local-path` (no parameters) must not
    // be applied over it: parameters are immutable.
    let class_exists = classes
        .get_opt(STORAGE_CLASS)
        .await
        .map_err(|e| fail(k8s::K8sError::api("read StorageClass local-path", e)))?
        .is_some();
    objects.retain(|o| {
        !(class_exists && o["kind"] == "StorageClass" && o["metadata"]["name"] == STORAGE_CLASS)
    });
    apply::apply_objects(
        &cluster.client,
        "local-path-storage.yaml",
        objects,
        NAMESPACE,
        "storage",
    )
    .await
    .map_err(&fail)?;
    let apply_class = || {
        apply::apply_yaml(
            &cluster.client,
            "storage-class.yaml",
            GUIDE_STORAGE_CLASS,
            "default",
            "storage",
        )
    };
    if let Err(e) = apply_class().await {
        // The provisioner's manifest creates `local-path` without the guide's parameters, and
        // parameters are immutable: recreate it, as a user following the guide must, if it is ours.
        let ours = classes
            .get_opt(STORAGE_CLASS)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.metadata.labels)
            .is_some_and(|l| {
                l.get(MANAGED_BY_LABEL.0).map(String::as_str) == Some(MANAGED_BY_LABEL.1)
            });
        if !ours {
            return Err(fail(e));
        }
        match classes
            .delete(STORAGE_CLASS, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => {
                return Err(fail(k8s::K8sError::api(
                    "delete the provisioner's StorageClass",
                    e,
                )));
            }
        }
        apply_class().await.map_err(&fail)?;
        notes.push(
            "recreated StorageClass local-path with the guide's parameters (they are immutable)"
                .into(),
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let waited = wait::until(
        &cluster.client,
        wait::Wait {
            api: deployments,
            name: DEPLOYMENT,
            namespace: Some(NAMESPACE),
            condition: "available",
            timeout: config.ready_timeout.min(Duration::from_secs(300)),
        },
        deployment_available,
        describe_deployment,
    )
    .await;
    if let Err(e) = waited {
        let e = super::explain_timeout(e, &cluster.client, NAMESPACE, "app=local-path-provisioner")
            .await;
        return Err(fail(e));
    }
    Ok(notes)
}

/// A deployment with every desired replica available.
pub fn deployment_available(deployment: Option<&Deployment>) -> bool {
    let Some(d) = deployment else { return false };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        >= desired
}

/// Replicas and conditions of a deployment, for timeout messages.
pub fn describe_deployment(deployment: Option<&Deployment>) -> String {
    let Some(d) = deployment else {
        return "absent".into();
    };
    let status = d.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            format!(
                "{}={} ({})",
                c.type_,
                c.status,
                c.message.unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{}/{} available, conditions: {}",
        status.available_replicas.unwrap_or(0),
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        if conditions.is_empty() {
            "none".into()
        } else {
            conditions.join("; ")
        }
    )
}
