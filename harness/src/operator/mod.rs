//! A stand-in for the Dynamo 0.4.1 operator: reconciles graphs into component deployments, Deployments and Services.
//!
//! The real operator cannot be built here: this machine's Go module proxy answers 403 for
//! `github.com/ai-dynamo/dynamo/deploy/cloud/operator` at every version and pseudo-version, and for
//! its dependency `github.com/NVIDIA/grove/operator/api`. This controller follows the 0.4.1
//! operator's documented behaviour (names, labels, injected environment, probes, GPU limits,
//! status) and every report names it as a stand-in.

pub mod component;
pub mod graph;
pub mod manager;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::k8s::kinds::{DynamoComponentDeployment, DynamoGraphDeployment, condition_true};

/// The field manager of what the stand-in operator writes.
pub const FIELD_MANAGER: &str = "dynamo-operator-stand-in";
/// The annotation naming the Dynamo release whose operator rules a graph (and its components) get.
pub const RELEASE_ANNOTATION: &str = crate::bridge::pod::VERSION_ANNOTATION;
/// The environment variable that tells the in-cluster stand-in which release it stands in for
/// (the chart sets it from the operator image's tag).
pub const RELEASE_ENV: &str = "DYNAMO_OPERATOR_RELEASE";

/// The release whose rules apply: the graph's annotation, else the operator's own release, else
/// the guide's 0.4.1.
pub fn release_of(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> crate::release::DynamoVersion {
    annotations
        .and_then(|a| a.get(RELEASE_ANNOTATION))
        .cloned()
        .or_else(|| std::env::var(RELEASE_ENV).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(crate::release::DynamoVersion::guide)
}

/// Errors reconciling a graph or a component.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The object's spec cannot be reconciled.
    #[error("{object}: {reason}")]
    Invalid {
        /// The object.
        object: String,
        /// Why.
        reason: String,
    },
    /// The API server refused a request.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        source: kube::Error,
    },
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> OperatorError {
    let action = action.into();
    move |source| OperatorError::Api { action, source }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

struct Context {
    client: Client,
}

async fn apply(client: &Client, object: &Value) -> Result<(), OperatorError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let action = format!("apply {kind} {ns}/{name}");
    match kind {
        "DynamoComponentDeployment" => {
            Api::<DynamoComponentDeployment>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Apply(object))
                .await
                .map(drop)
        }
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map(drop),
        "ServiceAccount" => {
            Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Apply(object))
                .await
                .map(drop)
        }
        "Role" => Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map(drop),
        "RoleBinding" => {
            Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Apply(object))
                .await
                .map(drop)
        }
        _ => Api::<Service>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map(drop),
    }
    .map_err(api_error(action))
}

/// A status without its timestamps, to tell a real change from a rewrite.
fn essence(status: Option<&Value>) -> Value {
    let mut status = status.cloned().unwrap_or(Value::Null);
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
    }
    status
}

async fn reconcile_graph(
    graph: Arc<DynamoGraphDeployment>,
    ctx: Arc<Context>,
) -> Result<Action, OperatorError> {
    if graph.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = graph.namespace().unwrap_or_default();
    let api: Api<DynamoGraphDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let components = match graph::components(&graph) {
        Ok(c) => c,
        Err(e) => {
            let status = json!({ "state": "failed", "conditions": [{
                "type": "Ready", "status": "False", "reason": "failed_to_reconcile_the_resources",
                "message": e.to_string(), "lastTransitionTime": now() }] });
            write_status(&api, &graph.name_any(), graph.status.as_ref(), status).await?;
            return Ok(Action::await_change());
        }
    };
    let release = release_of(graph.metadata.annotations.as_ref());
    if release.profile().discovery == crate::profile::Discovery::Kubernetes {
        for object in graph::discovery_access(&graph) {
            apply(&ctx.client, &object).await?;
        }
    }
    let dcds: Api<DynamoComponentDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut readiness = Vec::new();
    let mut workloads = Vec::new();
    for component in &components {
        apply(&ctx.client, component).await?;
        let name = component["metadata"]["name"].as_str().unwrap_or_default();
        let current = dcds
            .get_opt(name)
            .await
            .map_err(api_error(format!("read {name}")))?;
        // Available for the component's current spec: a status written before its spec changed
        // does not count.
        let available = current.is_some_and(|c| {
            condition_true(c.status.as_ref(), "Available")
                && observed(c.status.as_ref()) >= c.metadata.generation
        });
        readiness.push((name.to_string(), available));
        let service = component["spec"]["serviceName"]
            .as_str()
            .unwrap_or_default();
        let deployment = deployments
            .get_opt(name)
            .await
            .map_err(api_error(format!("read deployment {ns}/{name}")))?;
        workloads.push(graph::Workload::of(service, name, deployment.as_ref()));
    }
    // 1.x's worker rollout: the renamed workers replace the old once every one is available.
    if readiness.iter().all(|(_, available)| *available) {
        prune(&dcds, &graph, &components).await?;
    }
    let mut status = graph::status(&readiness, graph.metadata.generation, &now());
    if release.profile().operator_rules == crate::profile::OperatorRules::V1 {
        let key = if graph.spec["components"].is_array() {
            "components"
        } else {
            "services"
        };
        status[key] = graph::workloads_status(&workloads);
    }
    let done = status["state"] == "successful";
    write_status(&api, &graph.name_any(), graph.status.as_ref(), status).await?;
    Ok(Action::requeue(recheck(done)))
}

/// Deletes the component deployments `graph` owns that it no longer names: under 1.x's rules a
/// changed worker spec renames every worker, and the old ones serve until the new are available
/// (the caller prunes only then; the real operator also scales the old down step by step).
async fn prune(
    dcds: &Api<DynamoComponentDeployment>,
    graph: &DynamoGraphDeployment,
    wanted: &[Value],
) -> Result<(), OperatorError> {
    let uid = graph.metadata.uid.clone().unwrap_or_default();
    let owned = dcds
        .list(&kube::api::ListParams::default())
        .await
        .map_err(api_error("list DynamoComponentDeployments"))?;
    for dcd in owned.items.iter().filter(|d| {
        d.metadata.deletion_timestamp.is_none()
            && d.owner_references().iter().any(|o| o.uid == uid)
            && !wanted
                .iter()
                .any(|w| w["metadata"]["name"].as_str() == Some(&d.name_any()))
    }) {
        let name = dcd.name_any();
        match dcds.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(api_error(format!("delete {name}"))(e)),
        }
    }
    Ok(())
}

/// A status's `observedGeneration`.
fn observed(status: Option<&Value>) -> Option<i64> {
    status.and_then(|s| s["observedGeneration"].as_i64())
}

async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    old: Option<&Value>,
    new: Value,
) -> Result<(), OperatorError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if essence(old) == essence(Some(&new)) {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await
    .map(drop)
    .map_err(api_error(format!("write the status of {name}")))
}

/// The platform's NATS and etcd, as the chart passes them to the operator, where they exist.
async fn platform_env(client: &Client, ns: &str) -> component::PlatformEnv {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let exists = |name: &'static str| {
        let services = services.clone();
        async move { services.get_opt(name).await.ok().flatten().is_some() }
    };
    component::PlatformEnv {
        nats: exists("dynamo-platform-nats")
            .await
            .then(|| format!("nats://dynamo-platform-nats.{ns}:4222")),
        etcd: exists("dynamo-platform-etcd")
            .await
            .then(|| format!("dynamo-platform-etcd.{ns}:2379")),
    }
}

async fn reconcile_component(
    dcd: Arc<DynamoComponentDeployment>,
    ctx: Arc<Context>,
) -> Result<Action, OperatorError> {
    if dcd.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = dcd.namespace().unwrap_or_default();
    let name = dcd.name_any();
    let platform = platform_env(&ctx.client, &ns).await;
    apply(&ctx.client, &component::deployment(&dcd, &platform)).await?;
    if let Some(service) = component::service(&dcd) {
        apply(&ctx.client, &service).await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let deployment = deployments
        .get_opt(&name)
        .await
        .map_err(api_error(format!("read deployment {ns}/{name}")))?;
    let available = component::available(deployment.as_ref());
    let api: Api<DynamoComponentDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    write_status(
        &api,
        &name,
        dcd.status.as_ref(),
        component::status(available, dcd.metadata.generation, &now()),
    )
    .await?;
    Ok(Action::requeue(recheck(available)))
}

/// When to look again without a change: the watches of owned objects bring every change sooner,
/// so this is a safety net only (a not-ready object looked at every 5 s kept a parked graph's
/// stand-in busy, and a ready one every minute was most of an idle cluster's API writes; the
/// real operator's controller-runtime resyncs every 10 hours).
fn recheck(ready: bool) -> Duration {
    Duration::from_secs(if ready { 600 } else { 30 })
}

fn retry<K>(_: Arc<K>, error: &OperatorError, _: Arc<Context>) -> Action {
    eprintln!("operator stand-in: {error}");
    Action::requeue(Duration::from_secs(5))
}

/// Runs both controllers until the stream ends (it does not, short of a panic).
pub async fn run(client: Client) {
    let ctx = Arc::new(Context {
        client: client.clone(),
    });
    let graphs = Controller::new(
        Api::<DynamoGraphDeployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<DynamoComponentDeployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_graph, retry, ctx.clone())
    .for_each(|_| async {});
    let components = Controller::new(
        Api::<DynamoComponentDeployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_component, retry, ctx)
    .for_each(|_| async {});
    futures::join!(graphs, components);
}
