//! The guide's DynamoGraphDeployment, applied with the run's model and release, and waited for until ready.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::{Stage, StageError};
use crate::cluster::Cluster;
use crate::cluster::park::PARKED_ANNOTATION;
use crate::config::Config;
use crate::k8s::kinds::{DynamoComponentDeployment, DynamoGraphDeployment, conditions};
use crate::k8s::{K8sError, MANAGED_BY_LABEL, apply, wait};
use crate::operator::component::SELECTOR_LABEL;
use crate::operator::graph::COMPONENT_LABEL;

/// The guide's graph, as the guide writes it (DynamoGraphDeployment `v1alpha1`).
pub const FIXTURE: &str = include_str!("../../../fixtures/guide/disagg-graph.yaml");
/// The guide's graph in DynamoGraphDeployment `v1beta1` (the same topology, images, commands
/// and probes), for releases whose CRDs store `v1beta1`.
pub const FIXTURE_V1BETA1: &str = include_str!("../../../fixtures/guide/disagg-graph-v1beta1.yaml");

/// The fixture of the graph in the version the run's release stores
/// ([`crate::release::GraphCrd::stored`]): `(file under fixtures/, text)`.
pub fn fixture(config: &Config) -> (&'static str, &'static str) {
    match config.dynamo_version.release().graph_crd {
        crate::release::GraphCrd::V1beta1Stored => {
            ("guide/disagg-graph-v1beta1.yaml", FIXTURE_V1BETA1)
        }
        _ => ("guide/disagg-graph.yaml", FIXTURE),
    }
}
/// Its name.
pub const GRAPH: &str = "vllm-v1-disagg-router";
/// The model and release the guide's graph names, replaced by the run's.
const GUIDE_MODEL: &str = "Qwen/Qwen3-0.6B";
const GUIDE_IMAGE: &str = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1";
/// The state a ready graph reports (0.4.1 and 1.x alike).
pub const READY_STATE: &str = "successful";

/// The guide's prefill worker image, one release behind its other images.
const GUIDE_PREFILL_IMAGE: &str = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.0";

/// The guide's graph with the run's model and release, in the version the release stores
/// ([`fixture`]). The guide's own skew (its prefill worker runs 0.4.0 beside 0.4.1) is kept when
/// the run is of the guide's release, 0.4.1; for any other release every component runs the
/// release under test (a 0.4.0 worker in a 1.x graph is not the guide's skew, and would not run).
pub fn manifest(config: &Config) -> Result<Value, K8sError> {
    let image = format!(
        "nvcr.io/nvidia/ai-dynamo/vllm-runtime:{}",
        config.dynamo_version
    );
    let (file, fixture) = fixture(config);
    let mut text = fixture
        .replace(GUIDE_IMAGE, &image)
        .replace(GUIDE_MODEL, &config.model);
    if config.dynamo_version.guide_prefill().is_none() {
        text = text.replace(GUIDE_PREFILL_IMAGE, &image);
    }
    let mut objects = apply::parse_documents(file, &text)?;
    let mut graph = objects.remove(0);
    graph["metadata"]["annotations"][crate::bridge::pod::VERSION_ANNOTATION] =
        config.dynamo_version.to_string().into();
    if let Some(workers) = config.workers_version {
        let invalid = |reason: String| K8sError::InvalidFixture {
            fixture: file.to_string(),
            reason,
        };
        let services = crate::operator::graph::services_of(&graph["spec"]).map_err(invalid)?;
        let names: Vec<&str> = services
            .iter()
            .filter(|(_, s)| s["componentType"] == "worker")
            .map(|(name, _)| name.as_str())
            .collect();
        let image = serde_json::json!({
            "image": format!("nvcr.io/nvidia/ai-dynamo/vllm-runtime:{workers}")
        });
        let patch = crate::operator::graph::main_container_patch(&graph["spec"], &names, &image)
            .map_err(invalid)?;
        json_patch::merge(&mut graph, &patch);
        graph["metadata"]["annotations"][WORKERS_ANNOTATION] = workers.to_string().into();
    }
    Ok(graph)
}

/// The graph annotation naming its workers' release under version skew (their images' tag).
pub const WORKERS_ANNOTATION: &str = "dynamo-conformance/workers-version";

/// What one node can give a pod: allocatable CPU (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRoom {
    /// Allocatable CPU, millicores.
    pub cpu_millis: i64,
    /// Allocatable memory, bytes.
    pub memory_bytes: i64,
}

/// Lowers the CPU and memory *requests* of every service that asks for more than one node has
/// (`room`) to a quarter of its CPU and an eighth of its memory, so that the guide's graph
/// schedules on small simulated nodes; limits stay as the guide sets them (the pods become
/// Burstable instead of Guaranteed). One note per change. The guide's workers ask for 10 CPU and
/// 20Gi each: sized for a GPU node, not for kind nodes on a laptop.
pub fn fit_requests(graph: &mut Value, room: NodeRoom) -> Vec<String> {
    use crate::k8s::quantity;
    let mut notes = Vec::new();
    // v1alpha1's `services.<name>.resources`, or v1beta1's container `main` of each component.
    let resources: Vec<(String, &mut Value)> =
        if let Some(services) = graph["spec"]["services"].as_object_mut() {
            services
                .iter_mut()
                .map(|(name, s)| (name.clone(), &mut s["resources"]))
                .collect()
        } else {
            graph["spec"]["components"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let name = c["name"].as_str()?.to_string();
                    let main = c["podTemplate"]["spec"]["containers"]
                        .as_array_mut()?
                        .iter_mut()
                        .find(|c| c["name"] == "main")?;
                    Some((name, &mut main["resources"]))
                })
                .collect()
        };
    for (name, resources) in resources {
        let requests = &mut resources["requests"];
        if let Some(cpu) = requests["cpu"].as_str().and_then(quantity::millicores)
            && cpu > room.cpu_millis
        {
            let fitted = quantity::format_millicores(room.cpu_millis / 4);
            notes.push(format!(
                "{name} requests cpu {} -> {fitted}",
                requests["cpu"].as_str().unwrap_or_default()
            ));
            requests["cpu"] = fitted.into();
        }
        if let Some(memory) = requests["memory"].as_str().and_then(quantity::bytes)
            && memory > room.memory_bytes
        {
            let fitted = quantity::format_mebibytes(room.memory_bytes / 8);
            notes.push(format!(
                "{name} requests memory {} -> {fitted}",
                requests["memory"].as_str().unwrap_or_default()
            ));
            requests["memory"] = fitted.into();
        }
    }
    notes
}

/// [`fit_requests`] to the smallest GPU node of the cluster; a note saying what changed, if anything.
pub async fn fit_to_gpu_nodes(
    client: &Client,
    graph: &mut Value,
) -> Result<Option<String>, K8sError> {
    let Some(room) = gpu_node_room(client).await? else {
        return Ok(None);
    };
    let fitted = fit_requests(graph, room);
    Ok((!fitted.is_empty()).then(|| {
        format!(
            "requests fitted to the smallest GPU node ({} CPU, {} allocatable; limits as the guide sets them, so the pods are Burstable): {}",
            crate::k8s::quantity::format_millicores(room.cpu_millis),
            crate::k8s::quantity::format_mebibytes(room.memory_bytes),
            fitted.join(", ")
        )
    }))
}

/// The smallest allocatable CPU and memory among the nodes that carry GPUs.
async fn gpu_node_room(client: &Client) -> Result<Option<NodeRoom>, K8sError> {
    use crate::k8s::quantity;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default().labels("nvidia.com/gpu.present=true"))
        .await
        .map_err(|e| K8sError::api("list the GPU nodes", e))?;
    let rooms: Vec<NodeRoom> = listed
        .items
        .iter()
        .filter_map(|n| {
            let allocatable = n.status.as_ref()?.allocatable.as_ref()?;
            Some(NodeRoom {
                cpu_millis: quantity::millicores(&allocatable.get("cpu")?.0)?,
                memory_bytes: quantity::bytes(&allocatable.get("memory")?.0)?,
            })
        })
        .collect();
    Ok(rooms
        .into_iter()
        .min_by_key(|r| (r.cpu_millis, r.memory_bytes)))
}

/// Whether the graph reports the ready state and a `Ready` condition, written for its current
/// spec where the status says which (`observedGeneration`).
pub fn is_ready(graph: Option<&DynamoGraphDeployment>) -> bool {
    graph.is_some_and(|g| {
        g.status.as_ref().is_some_and(|s| {
            s["state"] == READY_STATE
                && conditions(Some(s))
                    .iter()
                    .any(|(t, st, _, _)| t == "Ready" && st == "True")
                && s["observedGeneration"]
                    .as_i64()
                    .is_none_or(|seen| Some(seen) >= g.metadata.generation)
        })
    })
}

/// The graph's state and `Ready` condition, one line.
pub fn describe(graph: Option<&DynamoGraphDeployment>) -> String {
    let Some(status) = graph.and_then(|g| g.status.as_ref()) else {
        return "no status yet (is the operator running?)".into();
    };
    let conditions: Vec<String> = conditions(Some(status))
        .into_iter()
        .map(|(t, s, r, m)| format!("{t}={s} ({r}: {m})"))
        .collect();
    let mut line = format!(
        "state {:?}, {}",
        status["state"].as_str().unwrap_or("none"),
        conditions.join("; ")
    );
    if let (Some(seen), Some(generation)) = (
        status["observedGeneration"].as_i64(),
        graph.and_then(|g| g.metadata.generation),
    ) && seen < generation
    {
        line.push_str(&format!(
            ", written for generation {seen} (the spec is at {generation})"
        ));
    }
    line
}

/// For each component that is not available: its pods and why they are not ready.
pub async fn pending_components(client: &Client, namespace: &str, graph: &str) -> Vec<String> {
    let dcds: Api<DynamoComponentDeployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = dcds.list(&ListParams::default()).await else {
        return vec!["cannot list DynamoComponentDeployments".into()];
    };
    let mut out = Vec::new();
    for dcd in list.items.into_iter().filter(|d| {
        d.owner_references().iter().any(|o| o.name == graph)
            && !crate::k8s::kinds::condition_true(d.status.as_ref(), "Available")
    }) {
        let name = dcd.name_any();
        let selector = format!("{SELECTOR_LABEL}={name}");
        let pod_lines: Vec<String> = match pods.list(&ListParams::default().labels(&selector)).await
        {
            Err(e) => vec![format!("cannot list its pods: {e}")],
            Ok(p) if p.items.is_empty() => vec!["no pods".into()],
            Ok(p) => {
                let mut lines = Vec::new();
                for pod in &p.items {
                    let mut line = pod_summary(pod);
                    if let Some(event) =
                        wait::latest_warning(client, Some(namespace), &pod.name_any()).await
                    {
                        line.push_str(&format!(", latest warning: {event}"));
                    }
                    lines.push(line);
                }
                lines
            }
        };
        let mut line = format!("component {name} not available: {}", pod_lines.join("; "));
        if let Some(event) = wait::latest_warning(client, Some(namespace), &name).await {
            line.push_str(&format!("; latest warning: {event}"));
        }
        out.push(line);
    }
    out
}

/// A pod's phase, readiness, its containers' kubelet reasons and, on the local provider, what the
/// bridge last saw of its process.
pub fn pod_summary(pod: &Pod) -> String {
    let mut line = crate::k8s::pods::describe(pod);
    if let Some(process) = pod.annotations().get(crate::bridge::pod::STATUS_ANNOTATION) {
        line.push_str(&format!(" ({process})"));
    }
    line
}

/// Deletes the suite's graph (and, through owner references, its components and pods) and waits until it is gone.
async fn replace(
    api: &Api<DynamoGraphDeployment>,
    graph: &DynamoGraphDeployment,
    ns: &str,
    config: &Config,
) -> Result<(), K8sError> {
    let uid = graph.uid().unwrap_or_default();
    api.delete(GRAPH, &kube::api::DeleteParams::foreground())
        .await
        .map_err(|e| K8sError::api(format!("delete DynamoGraphDeployment {ns}/{GRAPH}"), e))?;
    let gone = kube::runtime::conditions::is_deleted(&uid);
    match tokio::time::timeout(
        config.ready_timeout,
        kube::runtime::wait::await_condition(api.clone(), GRAPH, gone),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(K8sError::Timeout {
            what: format!("DynamoGraphDeployment {ns}/{GRAPH}"),
            condition: "deleted".into(),
            waited: config.ready_timeout,
            last_seen: format!("the watch failed: {e}"),
        }),
        Err(_) => Err(K8sError::Timeout {
            what: format!("DynamoGraphDeployment {ns}/{GRAPH}"),
            condition: "deleted".into(),
            waited: config.ready_timeout,
            last_seen: "still there (foreground deletion waits for its components and pods)".into(),
        }),
    }
}

/// Each service's `(service, replicas)` in a graph's spec of either version (`replicas`
/// defaults to 1). A service's pods and Deployment carry its name in the operator's
/// `nvidia.com/dynamo-component` label, under every release's rules; their own names do not
/// tell (1.x adds a hash to a worker's).
pub fn desired_replicas(spec: &Value) -> Vec<(String, i64)> {
    crate::operator::graph::services_of(spec)
        .unwrap_or_default()
        .iter()
        .map(|(service, s)| (service.clone(), s["replicas"].as_i64().unwrap_or(1)))
        .collect()
}

/// Whether an object's labels place it in `service` of the guide's graph: the operator's
/// `nvidia.com/dynamo-component`, and under 1.x's rules `nvidia.com/dynamo-graph-deployment-name`
/// (0.x's operator names no graph on its objects).
pub fn of_service(labels: &std::collections::BTreeMap<String, String>, service: &str) -> bool {
    labels.get(COMPONENT_LABEL).map(String::as_str) == Some(service)
        && labels
            .get(crate::operator::graph::GRAPH_LABEL)
            .is_none_or(|g| g == GRAPH)
}

/// The services with fewer Ready pods (not terminating) than their spec asks, as
/// `service: ready/wanted Ready`.
pub fn short_of_replicas<'a>(
    wanted: &[(String, i64)],
    pods: impl Iterator<Item = &'a Pod> + Clone,
) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|(component, want)| {
            let ready = pods
                .clone()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && of_service(p.labels(), component)
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
                .count() as i64;
            (ready < *want).then(|| format!("{component}: {ready}/{want} Ready"))
        })
        .collect()
}

/// Why `d` has not finished rolling out (at least `want` replicas), by `kubectl rollout status`'s
/// rules; `None` once it has.
pub fn rollout_unfinished(d: &Deployment, want: i64) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as i64;
    let updated = status.updated_replicas.unwrap_or_default() as i64;
    let total = status.replicas.unwrap_or_default() as i64;
    let available = status.available_replicas.unwrap_or_default() as i64;
    Some(
        if status.observed_generation.unwrap_or_default() < generation {
            format!("generation {generation} not yet observed")
        } else if updated < replicas.max(want) {
            format!("{updated} of {replicas} pods run the current revision")
        } else if total > updated {
            format!("{} pods of an old revision left", total - updated)
        } else if available < updated {
            format!("{available} of {updated} updated pods available")
        } else {
            return None;
        },
    )
}

/// The services whose Deployments (those labelled `nvidia.com/dynamo-component=<service>`, not
/// being deleted) have not finished rolling out, by `kubectl rollout status`'s rules: the
/// controller has seen the newest spec (`observedGeneration`), every replica runs the current
/// template (`updatedReplicas`), no pod of an old revision is left (`replicas`) and every updated
/// one is available. A graph reported ready while a rollout is still under way is
/// ai-dynamo/dynamo#3567. Services with no such Deployment (another operator's workload kind) are
/// not judged here.
pub fn rollouts_unfinished<'a>(
    wanted: &[(String, i64)],
    deployments: impl Iterator<Item = &'a Deployment> + Clone,
) -> Vec<String> {
    wanted
        .iter()
        .flat_map(|(service, want)| {
            deployments
                .clone()
                .filter(|d| {
                    d.metadata.deletion_timestamp.is_none() && of_service(d.labels(), service)
                })
                .filter_map(|d| {
                    let why = rollout_unfinished(d, *want)?;
                    Some(format!("{service}: rolling out: {why}"))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How long each component's newest pod took from its creation to be scheduled, to have its
/// containers started and to turn Ready, one line per component (seconds, from the pod's
/// `creationTimestamp`, its `PodScheduled` and `Ready` conditions and its containers' `startedAt`).
pub fn phase_timings<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<String> {
    let mut newest: std::collections::BTreeMap<String, &Pod> = Default::default();
    for p in pods.filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let Some(component) = p.labels().get(COMPONENT_LABEL) else {
            continue;
        };
        if !of_service(p.labels(), component) {
            continue;
        }
        let created = |p: &Pod| p.metadata.creation_timestamp.clone().map(|t| t.0);
        if newest
            .get(component)
            .is_none_or(|held| created(held) < created(p))
        {
            newest.insert(component.clone(), p);
        }
    }
    newest
        .into_iter()
        .filter_map(|(component, p)| {
            let created = p.metadata.creation_timestamp.as_ref()?.0;
            let status = p.status.as_ref()?;
            let after = |t: k8s_openapi::jiff::Timestamp| {
                format!(
                    "{:.1} s",
                    (t - created)
                        .total(k8s_openapi::jiff::Unit::Second)
                        .unwrap_or(0.0)
                )
            };
            let condition = |type_: &str| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == type_ && c.status == "True")
                    .and_then(|c| c.last_transition_time.as_ref())
                    .map(|t| after(t.0))
            };
            let started = status
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| t.0)
                .max()
                .map(after);
            let or_not = |v: Option<String>| v.unwrap_or_else(|| "not yet".into());
            Some(format!(
                "{component}: scheduled {}, started {}, Ready {} after creation",
                or_not(condition("PodScheduled")),
                or_not(started),
                or_not(condition("Ready"))
            ))
        })
        .collect()
}

/// Waits (watching the pods) until every component has as many Ready pods as the graph's spec
/// asks: the graph's status can trail a change of its spec (workers brought back from a park).
async fn pods_ready(
    client: &Client,
    ns: &str,
    config: &Config,
    wanted: &[(String, i64)],
) -> Result<(), K8sError> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            pods,
            watcher::Config::default().labels(crate::operator::component::TYPE_LABEL),
        ),
    )
    .default_backoff();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let (rollouts, rollouts_writer) = reflector::store();
    let rollout_stream = reflector(rollouts_writer, watcher(deployments, Default::default()))
        .default_backoff()
        .map(|e| e.map(|_| ()));
    let stream = futures::stream::select(stream.map(|e| e.map(|_| ())), rollout_stream);
    let mut stream = std::pin::pin!(stream);
    let mut short = vec!["no pods listed yet".to_string()];
    let waited = tokio::time::timeout(config.ready_timeout, async {
        while let Some(event) = stream.next().await {
            if event.is_err() {
                continue;
            }
            // Judged once both are listed: a Deployment not seen yet is not a finished rollout.
            let pods_listed = futures::FutureExt::now_or_never(reader.wait_until_ready())
                .is_some_and(|r| r.is_ok());
            let deployments_listed = futures::FutureExt::now_or_never(rollouts.wait_until_ready())
                .is_some_and(|r| r.is_ok());
            if !pods_listed || !deployments_listed {
                continue;
            }
            let state = reader.state();
            short = short_of_replicas(wanted, state.iter().map(|p| p.as_ref()));
            let listed = rollouts.state();
            short.extend(rollouts_unfinished(
                wanted,
                listed.iter().map(|d| d.as_ref()),
            ));
            if short.is_empty() {
                return;
            }
        }
    })
    .await;
    match waited {
        Ok(()) if short.is_empty() => Ok(()),
        _ => Err(K8sError::Timeout {
            what: format!("the pods of DynamoGraphDeployment {ns}/{GRAPH}"),
            condition: "as many Ready as the graph asks, each Deployment rolled out".into(),
            waited: config.ready_timeout,
            last_seen: short.join("; "),
        }),
    }
}

/// Whether the graph's frontend serves ([`crate::openai::served::served_in_a_row`]), through a
/// port-forward to a Ready frontend pod.
async fn frontend_serves(client: &Client, ns: &str, config: &Config) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{}=frontend", crate::operator::component::TYPE_LABEL);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("cannot list the frontend pods: {e}"))?;
    let ready = |p: &&Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let Some(pod) = listed.items.iter().find(ready) else {
        return Err("no frontend pod is Ready".into());
    };
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some("http"))
                .or(ports.first())
        })
        .map_or(8000, |p| p.container_port) as u16;
    let forward = crate::k8s::forward::PortForward::open(pods, ns, &pod.name_any(), port)
        .await
        .map_err(|e| e.to_string())?;
    let endpoint = crate::openai::Endpoint::new(&forward.url(), config.api_timeouts)
        .map_err(|e| e.to_string())?;
    crate::openai::served::served_in_a_row(&endpoint, &config.model)
        .await
        .map(drop)
}

/// Applies the graph (unless someone else's graph of that name is there) and waits until it is ready.
pub async fn ensure(cluster: &Cluster, config: &Config) -> Result<Vec<String>, StageError> {
    let fail = StageError::cluster(Stage::Graph);
    let ns = config.namespace.as_str();
    let api: Api<DynamoGraphDeployment> = Api::namespaced(cluster.client.clone(), ns);
    let existing = api.get_opt(GRAPH).await.map_err(|e| {
        fail(K8sError::api(
            format!("read DynamoGraphDeployment {ns}/{GRAPH}"),
            e,
        ))
    })?;
    let foreign = existing.as_ref().is_some_and(|g| {
        g.labels().get(MANAGED_BY_LABEL.0).map(String::as_str) != Some(MANAGED_BY_LABEL.1)
    });
    let mut notes = Vec::new();
    let other_release = existing
        .as_ref()
        .and_then(|g| {
            g.annotations()
                .get(crate::bridge::pod::VERSION_ANNOTATION)
                .cloned()
        })
        .filter(|v| !foreign && *v != config.dynamo_version.to_string())
        .or_else(|| {
            // Another skew (or none where there was one) replaces the graph as well.
            let workers = existing
                .as_ref()?
                .annotations()
                .get(WORKERS_ANNOTATION)
                .cloned();
            let wanted = config.workers_version.map(|w| w.to_string());
            (!foreign && workers != wanted).then(|| {
                format!(
                    "{}{}",
                    config.dynamo_version,
                    workers
                        .map(|w| format!(" with workers {w}"))
                        .unwrap_or_default()
                )
            })
        });
    if let (Some(old), Some(graph)) = (&other_release, &existing) {
        // Pod templates that do not name the release (the guide's 0.4.0 prefill image) would not
        // roll, so a graph of another release is replaced rather than updated.
        replace(&api, graph, ns, config).await.map_err(&fail)?;
        notes.push(format!("replaced the graph of Dynamo {old}"));
    }
    if foreign {
        notes.push(format!(
            "DynamoGraphDeployment {ns}/{GRAPH} was there already and is used as is"
        ));
    } else {
        let mut graph = manifest(config).map_err(&fail)?;
        let kind_simulated =
            cluster.provider == crate::config::ProviderKind::Kind && cluster.offline();
        if kind_simulated || config.fit_requests {
            let fitted = fit_to_gpu_nodes(&cluster.client, &mut graph)
                .await
                .map_err(&fail)?;
            notes.extend(fitted.map(|note| match kind_simulated {
                true => note,
                false => format!("deviation from the guide (--fit-requests): {note}"),
            }));
        }
        let api_version = graph["apiVersion"].as_str().unwrap_or_default().to_string();
        apply::apply_objects(
            &cluster.client,
            fixture(config).0,
            vec![graph],
            ns,
            Stage::Graph.name(),
        )
        .await
        .map_err(&fail)?;
        notes.push(format!(
            "applied the guide's DynamoGraphDeployment {GRAPH} as {} ({}, the version Dynamo {}'s CRDs store; model {}, image tag {} where the guide has 0.4.1)",
            api_version,
            fixture(config).0,
            config.dynamo_version,
            config.model,
            config.dynamo_version
        ));
        if let Some(parked) = existing
            .as_ref()
            .and_then(|g| g.annotations().get(PARKED_ANNOTATION).cloned())
        {
            let unpark =
                serde_json::json!({"metadata": {"annotations": {PARKED_ANNOTATION: null}}});
            api.patch(GRAPH, &PatchParams::default(), &Patch::Merge(unpark))
                .await
                .map_err(|e| fail(K8sError::api(format!("unpark {ns}/{GRAPH}"), e)))?;
            notes.push(format!("brought back the parked graph ({parked})"));
        }
    }
    let graph_ready = || {
        wait::until(
            &cluster.client,
            wait::Wait {
                api: api.clone(),
                name: GRAPH,
                namespace: Some(ns),
                condition: "ready",
                timeout: config.ready_timeout,
            },
            |g: Option<&DynamoGraphDeployment>| is_ready(g),
            describe,
        )
    };
    let waited = graph_ready().await;
    match waited {
        Ok(graph) => {
            // The graph's status trails its pods: the pods themselves must be Ready too, and then
            // the graph again (a status written before a pod failed can still say ready).
            pods_ready(&cluster.client, ns, config, &desired_replicas(&graph.spec))
                .await
                .map_err(&fail)?;
            graph_ready().await.map_err(&fail)?;
            if foreign {
                return Ok(notes);
            }
            // Ready is not serving: a frontend that keeps a removed worker's instance (0.4.1,
            // after a worker pod is replaced) answers every request 503 or 500 until restarted.
            if let Err(why) = frontend_serves(&cluster.client, ns, config).await {
                let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
                let frontends = ListParams::default().labels(&format!(
                    "{}=frontend",
                    crate::operator::component::TYPE_LABEL
                ));
                pods.delete_collection(&Default::default(), &frontends)
                    .await
                    .map_err(|e| {
                        fail(K8sError::api(
                            format!("restart the frontend of {ns}/{GRAPH}"),
                            e,
                        ))
                    })?;
                notes.push(format!(
                    "the ready graph's frontend did not serve ({why}): its pod was restarted"
                ));
                // The new pod first, then the graph's status, which trails it (read too early,
                // the status still says what it said before the restart).
                pods_ready(&cluster.client, ns, config, &desired_replicas(&graph.spec))
                    .await
                    .map_err(&fail)?;
                graph_ready().await.map_err(&fail)?;
                if let Err(why) = frontend_serves(&cluster.client, ns, config).await {
                    return Err(fail(K8sError::Timeout {
                        what: format!(
                            "the frontend of DynamoGraphDeployment {ns}/{GRAPH}, restarted"
                        ),
                        condition: "serving its model".into(),
                        waited: crate::openai::served::SERVED_WITHIN,
                        last_seen: why,
                    }));
                }
            }
            Ok(notes)
        }
        Err(K8sError::Timeout {
            what,
            condition,
            waited,
            mut last_seen,
        }) => {
            let pending = pending_components(&cluster.client, ns, GRAPH).await;
            if !pending.is_empty() {
                last_seen.push_str(&format!("; {}", pending.join("; ")));
            }
            Err(fail(K8sError::Timeout {
                what,
                condition,
                waited,
                last_seen,
            }))
        }
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    fn config(version: &str, model: &str) -> Config {
        Config::resolve(ConfigLayer {
            dynamo_version: Some(version.into()),
            model: Some(model.into()),
            ..ConfigLayer::default()
        })
        .unwrap()
    }

    fn images(graph: &Value) -> Vec<(String, String)> {
        crate::operator::graph::services_of(&graph["spec"])
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let image = v["extraPodSpec"]["mainContainer"]["image"]
                    .as_str()
                    .unwrap();
                (k.clone(), image.rsplit_once(':').unwrap().1.to_string())
            })
            .collect()
    }

    #[test]
    fn the_guides_skew_stays_on_the_guides_release_only() {
        let graph = manifest(&config("0.4.1", "Qwen/Qwen3-0.6B")).unwrap();
        assert_eq!(
            images(&graph),
            [
                ("Frontend".to_string(), "0.4.1".to_string()),
                ("VllmDecodeWorker".to_string(), "0.4.1".to_string()),
                ("VllmPrefillWorker".to_string(), "0.4.0".to_string()),
            ]
        );
        let graph = manifest(&config("1.6.1", "Qwen/Qwen3-0.6B")).unwrap();
        assert_eq!(
            images(&graph),
            [
                ("Frontend".to_string(), "1.6.1".to_string()),
                ("VllmDecodeWorker".to_string(), "1.6.1".to_string()),
                ("VllmPrefillWorker".to_string(), "1.6.1".to_string()),
            ]
        );
        assert_eq!(
            graph["metadata"]["annotations"][crate::bridge::pod::VERSION_ANNOTATION],
            "1.6.1"
        );
    }

    #[test]
    fn requests_too_big_for_a_node_are_fitted_and_limits_kept() {
        let mut graph = manifest(&config("0.4.1", "Qwen/Qwen3-0.6B")).unwrap();
        let room = NodeRoom {
            cpu_millis: 2000,
            memory_bytes: 24 * 1073741824,
        };
        let notes = fit_requests(&mut graph, room);
        assert_eq!(
            notes,
            [
                "VllmDecodeWorker requests cpu 10 -> 500m",
                "VllmPrefillWorker requests cpu 10 -> 500m",
            ]
        );
        let decode = &graph["spec"]["services"]["VllmDecodeWorker"]["resources"];
        assert_eq!(decode["requests"]["cpu"], "500m");
        assert_eq!(decode["requests"]["memory"], "20Gi");
        assert_eq!(decode["limits"]["cpu"], "10");
        assert_eq!(decode["requests"]["gpu"], "1");
        // The frontend's 1 CPU fits and stays.
        assert_eq!(
            graph["spec"]["services"]["Frontend"]["resources"]["requests"]["cpu"],
            "1"
        );
        let small = NodeRoom {
            cpu_millis: 2000,
            memory_bytes: 8 * 1073741824,
        };
        let mut graph = manifest(&config("0.4.1", "Qwen/Qwen3-0.6B")).unwrap();
        let notes = fit_requests(&mut graph, small);
        assert!(
            notes.contains(&"VllmDecodeWorker requests memory 20Gi -> 1024Mi".to_string()),
            "{notes:?}"
        );
    }

    #[test]
    fn a_release_gets_the_graph_in_the_version_its_crds_store_fitted_alike() {
        let room = NodeRoom {
            cpu_millis: 2000,
            memory_bytes: 24 * 1073741824,
        };
        for (version, api) in [
            ("1.1.1", "nvidia.com/v1alpha1"),
            ("1.3.1", "nvidia.com/v1alpha1"),
            ("1.4.2", "nvidia.com/v1beta1"),
            ("1.6.1", "nvidia.com/v1beta1"),
        ] {
            let mut graph = manifest(&config(version, "my/model")).unwrap();
            assert_eq!(graph["apiVersion"], api, "{version}");
            assert_eq!(
                fit_requests(&mut graph, room),
                [
                    "VllmDecodeWorker requests cpu 10 -> 500m",
                    "VllmPrefillWorker requests cpu 10 -> 500m",
                ],
                "{version}"
            );
            let services = crate::operator::graph::services_of(&graph["spec"]).unwrap();
            let decode = &services["VllmDecodeWorker"];
            assert_eq!(decode["resources"]["requests"]["cpu"], "500m");
            assert_eq!(decode["resources"]["limits"]["gpu"], "1");
            let main = &decode["extraPodSpec"]["mainContainer"];
            assert!(
                main["args"][0]
                    .as_str()
                    .unwrap()
                    .contains("--model my/model")
            );
            assert_eq!(
                main["image"],
                format!("nvcr.io/nvidia/ai-dynamo/vllm-runtime:{version}")
            );
            let prefill = &services["VllmPrefillWorker"]["extraPodSpec"]["mainContainer"];
            assert_eq!(prefill["image"], main["image"], "{version}: no guide skew");
            assert_eq!(desired_replicas(&graph["spec"]).len(), 3);
        }
    }

    #[test]
    fn the_model_is_a_parameter() {
        let graph = manifest(&config("0.4.1", "my/model")).unwrap();
        let args =
            graph["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]["mainContainer"]["args"]
                [0]
            .as_str()
            .unwrap();
        assert!(args.contains("--model my/model"), "{args}");
    }

    #[test]
    fn phases_are_timed_from_each_components_newest_pod() {
        let pod = |name: &str, created: &str, ready: Option<&str>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "creationTimestamp": created,
                              "labels": { COMPONENT_LABEL: "Decode" } },
                "status": {
                    "conditions": [
                        { "type": "PodScheduled", "status": "True", "lastTransitionTime": created },
                        { "type": "Ready", "status": if ready.is_some() { "True" } else { "False" },
                          "lastTransitionTime": ready.unwrap_or(created) },
                    ],
                    "containerStatuses": [{ "name": "main", "ready": ready.is_some(), "restartCount": 0,
                        "image": "i", "imageID": "",
                        "state": { "running": { "startedAt": "2026-12-01T06:00:02Z" } } }],
                },
            }))
            .unwrap()
        };
        let old = pod("old", "2026-11-30T06:00:00Z", Some("2026-11-30T06:01:00Z"));
        let new = pod(
            "new",
            "2026-12-01T06:00:00Z",
            Some("2026-12-01T06:01:01.500Z"),
        );
        assert_eq!(
            phase_timings([&old, &new].into_iter()),
            ["Decode: scheduled 0.0 s, started 2.0 s, Ready 61.5 s after creation"]
        );
        let pending = pod("p", "2026-12-01T06:00:00Z", None);
        assert_eq!(
            phase_timings(std::iter::once(&pending)),
            ["Decode: scheduled 0.0 s, started 2.0 s, Ready not yet after creation"]
        );
    }

    #[test]
    fn a_rollout_under_way_is_not_ready_by_kubectl_rollout_status_rules() {
        let deployment = |generation: i64, status: Value| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "g-decode-0a1b2c3d", "generation": generation,
                              "labels": { COMPONENT_LABEL: "Decode" } },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": { SELECTOR_LABEL: "g-decode-0a1b2c3d" } },
                    "template": {},
                },
                "status": status,
            }))
            .unwrap()
        };
        let wanted = [("Decode".to_string(), 1)];
        let judge = |d: &Deployment| rollouts_unfinished(&wanted, std::iter::once(d));
        let done = serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        assert!(judge(&deployment(2, done.clone())).is_empty());
        assert_eq!(
            judge(&deployment(3, done)),
            ["Decode: rolling out: generation 3 not yet observed"]
        );
        assert_eq!(
            judge(&deployment(
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1})
            )),
            ["Decode: rolling out: 1 pods of an old revision left"]
        );
        assert_eq!(
            judge(&deployment(
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1})
            )),
            ["Decode: rolling out: 0 of 1 pods run the current revision"]
        );
        let other = [("Frontend".to_string(), 1)];
        assert!(
            rollouts_unfinished(&other, std::iter::once(&deployment(3, Value::Null))).is_empty(),
            "a component without a Deployment is not judged here"
        );
    }

    #[test]
    fn ready_needs_the_state_and_the_condition() {
        let graph = |status: Value| -> DynamoGraphDeployment {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "g"}, "status": status}))
                .unwrap()
        };
        let ready = graph(
            serde_json::json!({"state": "successful", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        let pending = graph(
            serde_json::json!({"state": "pending", "conditions": [{"type": "Ready", "status": "False", "reason": "some_resources_are_not_ready", "message": "1 resources not ready: [\"x\"]"}]}),
        );
        assert!(is_ready(Some(&ready)));
        assert!(!is_ready(Some(&pending)));
        assert!(!is_ready(None));
        assert_eq!(
            describe(Some(&pending)),
            "state \"pending\", Ready=False (some_resources_are_not_ready: 1 resources not ready: [\"x\"])"
        );
    }

    fn pod(component: &str, ready: bool, terminating: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("{component}-x"),
                "labels": {COMPONENT_LABEL: component},
                "deletionTimestamp": terminating.then_some("2026-11-30T00:00:00Z"),
            },
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_service_is_its_component_label_in_this_graph() {
        let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let graph_label = crate::operator::graph::GRAPH_LABEL;
        assert!(of_service(
            &labels(&[(COMPONENT_LABEL, "Frontend")]),
            "Frontend"
        ));
        assert!(of_service(
            &labels(&[(COMPONENT_LABEL, "Frontend"), (graph_label, GRAPH)]),
            "Frontend"
        ));
        assert!(!of_service(
            &labels(&[(COMPONENT_LABEL, "Frontend"), (graph_label, "another")]),
            "Frontend"
        ));
        assert!(!of_service(
            &labels(&[(COMPONENT_LABEL, "Frontend")]),
            "Decode"
        ));
        assert!(!of_service(&labels(&[]), "Frontend"));
    }

    #[test]
    fn a_component_short_of_its_replicas_keeps_the_graph_waiting() {
        let mut graph: Value = serde_saphyr::from_str(FIXTURE).unwrap();
        let wanted = desired_replicas(&graph["spec"]);
        let decode = "VllmDecodeWorker".to_string();
        assert!(wanted.contains(&(decode.clone(), 1)), "{wanted:?}");
        let frontend = "Frontend".to_string();
        let prefill = "VllmPrefillWorker".to_string();
        // A stale "successful" status after the workers come back from a park: only the
        // frontend's pod is there, then an old worker pod still terminating.
        let pods = [pod(&frontend, true, false), pod(&decode, true, true)];
        assert_eq!(
            short_of_replicas(&wanted, pods.iter()),
            [
                format!("{decode}: 0/1 Ready"),
                format!("{prefill}: 0/1 Ready")
            ]
        );
        let pods = [
            pod(&frontend, true, false),
            pod(&decode, true, false),
            pod(&prefill, false, false),
        ];
        assert_eq!(
            short_of_replicas(&wanted, pods.iter()),
            [format!("{prefill}: 0/1 Ready")]
        );
        let pods = [
            pod(&frontend, true, false),
            pod(&decode, true, false),
            pod(&prefill, true, false),
        ];
        assert!(short_of_replicas(&wanted, pods.iter()).is_empty());
        // Parked: no worker is wanted.
        graph["spec"]["services"]["VllmDecodeWorker"]["replicas"] = 0.into();
        graph["spec"]["services"]["VllmPrefillWorker"]["replicas"] = 0.into();
        let wanted = desired_replicas(&graph["spec"]);
        assert!(short_of_replicas(&wanted, [pod(&frontend, true, false)].iter()).is_empty());
    }
}
