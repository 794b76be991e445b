//! The Dynamo CRDs: the guide's `dynamo-crds` chart on a real cluster, the project's stand-ins on `local`.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::wait::conditions::is_crd_established;

use super::chart::{self, Chart};
use super::{Stage, StageError, helm};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::k8s::wait;

/// The CRDs the guide's graph needs.
pub const CRDS: [&str; 2] = [
    "dynamographdeployments.nvidia.com",
    "dynamocomponentdeployments.nvidia.com",
];

/// Installs the CRDs and waits until each is established.
pub async fn ensure(cluster: &Cluster, config: &Config) -> Result<Vec<String>, StageError> {
    let fail = StageError::cluster(Stage::Crds);
    let offline = cluster.offline();
    let source = chart::source(Chart::Crds, config, offline).map_err(|e| StageError::Input {
        stage: "crds",
        reason: e.to_string(),
    })?;
    // The stand-in is shaped like the release under test by `--set` values.
    let local = source.is_stand_in();
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let graph_crd = config.dynamo_version.release().graph_crd;
    // The API server refuses to drop a version objects were stored in (`status.storedVersions`):
    // after a release that stores v1beta1, an older one's stand-in keeps serving it.
    let stored_before = api
        .get_opt(CRDS[0])
        .await
        .ok()
        .flatten()
        .and_then(|c| c.status.and_then(|s| s.stored_versions))
        .unwrap_or_default();
    let keep_v1beta1 =
        local && !graph_crd.serves_v1beta1() && stored_before.iter().any(|v| v == "v1beta1");
    if local {
        chart::CRDS_CHART.materialize(&config.cache_dir, "crds")?;
    }
    let release = helm::Release {
        stage: "crds",
        name: "dynamo-crds",
        chart: &source,
        values: None,
        namespace: &config.namespace,
        sets: if local {
            vec![
                format!(
                    "workerMetadata={}",
                    config.dynamo_version.profile().discovery
                        == crate::profile::Discovery::Kubernetes
                ),
                format!(
                    "graph.v1beta1={}",
                    graph_crd.serves_v1beta1() || keep_v1beta1
                ),
                format!("graph.stored={}", graph_crd.stored()),
            ]
        } else {
            Vec::new()
        },
        owned: offline,
    };
    let mut absent = Vec::new();
    for crd in CRDS {
        if api.get_metadata_opt(crd).await.ok().flatten().is_none() {
            absent.push(crd);
        }
    }
    let mut note = helm::install(cluster, release).await?;
    // Helm keeps the CRDs of a chart's crds/ directory on uninstall: the ledger names them.
    for crd in absent {
        crate::ledger::record_apply(
            false,
            "crds",
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            crd,
        );
    }
    if local {
        note.push_str(&format!(
            " (the project's stand-in: same CRD names, DynamoGraphDeployment {} stored{}, open schema; NGC is unreachable here)",
            graph_crd.stored(),
            if keep_v1beta1 {
                ", v1beta1 still served: a newer release's run stored objects in it"
            } else if graph_crd.serves_v1beta1() {
                " and v1alpha1 and v1beta1 served"
            } else {
                ""
            }
        ));
    }
    for crd in CRDS {
        wait::until(
            &cluster.client,
            wait::Wait {
                api: api.clone(),
                name: crd,
                namespace: None,
                condition: "established",
                timeout: Duration::from_secs(60),
            },
            is_crd_established(),
            describe_crd,
        )
        .await
        .map_err(&fail)?;
    }
    Ok(vec![note])
}

/// A CRD's conditions, for timeout messages.
pub fn describe_crd(crd: Option<&CustomResourceDefinition>) -> String {
    let conditions = crd
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let text: Vec<String> = conditions
        .iter()
        .map(|c| format!("{}={}", c.type_, c.status))
        .collect();
    if text.is_empty() {
        "no conditions".into()
    } else {
        text.join(", ")
    }
}
