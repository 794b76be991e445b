//! The graph tier's cases: the guide's DynamoGraphDeployment ready, its pods, Service and logs, and the port-forwards the API cases use.

use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;

use super::blocker::{Need, Unmet, blockers};
use super::cluster::{ensure, session_for};
use crate::cluster::Cluster;
use crate::config::{Config, ProviderKind};
use crate::stages::{Stage, graph};

/// What was real and what was simulated behind the graph, one line.
pub fn graph_provenance(cluster: &Cluster, config: &Config) -> String {
    match cluster.provider {
        ProviderKind::Local => format!(
            "real: a Kubernetes {} control plane built from the Go module proxy; Dynamo {} (PyPI) frontend and {}worker processes, \
             one per pod, started by the bridge from each pod's own command and environment and reached through kube-rs \
             port-forwards via the API server and kwok, their probes run against them (exec probes with the image's programs); {}; \
             stand-in: the Dynamo operator (the project's controller following the release line's rules: its Go module is refused by this machine's proxy); \
             simulated: nodes and pods (kwok), GPUs (nvidia.com/gpu capacity), the vLLM engine (Dynamo's mocker with the model's tokenizer){}",
            cluster.version,
            config.dynamo_version,
            match config.workers_version {
                Some(workers) => format!("Dynamo {workers} (version skew) "),
                None => String::new(),
            },
            match config.dynamo_version.release().planes {
                crate::release::Planes::EtcdAndNats =>
                    "the platform's etcd (Debian) and nats-server v2.10.21 (Go module proxy) as local processes, discovery through that etcd",
                crate::release::Planes::FileTcpZmq =>
                    "discovery through files shared by the namespace's processes (standing in for the Kubernetes API's)",
            },
            match config.dynamo_version.asks_the_hub(config.workers_version) {
                true => format!(", the Hugging Face Hub ({})", crate::dynamo::hub::SERVER),
                false => String::new(),
            }
        ),
        ProviderKind::Kind if cluster.offline() => {
            let profile = config.dynamo_version.profile();
            let (platform, rules) = match profile.discovery {
                crate::profile::Discovery::EtcdAndNats => (
                    "etcd and NATS on claims of the guide's provisioner",
                    "following 0.4.1's rules",
                ),
                crate::profile::Discovery::Kubernetes => (
                    "NATS on a claim of the guide's provisioner, discovery through the Kubernetes API \
                     (DynamoWorkerMetadata and labelled EndpointSlices)",
                    "following 1.x's Kubernetes discovery rules",
                ),
            };
            let skew = config
                .dynamo_version
                .guide_prefill()
                .map(|prefill| {
                    format!(" (the guide's prefill image runs its own release, {prefill})")
                })
                .unwrap_or_default();
            format!(
                "real: a kind cluster's kubelets running Dynamo {} (PyPI) frontend and worker containers of the runtime images built here{skew}, \
                 their probes (the frontend's curl | jq included) run by the kubelets, {platform}, \
                 reached through kube-rs port-forwards via the API server and the kubelet; \
                 stand-in: the Dynamo operator (the project's controller {rules}, run in the operator pod); \
                 simulated: GPUs (a device plugin advertises nvidia.com/gpu; RuntimeClass nvidia is plain runc), the vLLM engine \
                 (dynamo.vllm runs Dynamo's mocker with the model's tokenizer); worker CPU and memory requests fitted to the nodes (see graph::ready)",
                config.dynamo_version
            )
        }
        _ => format!(
            "real: the cluster's own Kubernetes {}; the operator, pods and engine are what the cluster runs from the images the preflight lists \
             (the suite does not look inside them), reached through kube-rs port-forwards; simulated: {}{}",
            cluster.version,
            match cluster.simulation.gpus {
                Some(_) => cluster.simulation.describe(),
                None => "nothing the suite was told of".to_string(),
            },
            match config.fit_requests {
                true =>
                    "; deviation from the guide: worker CPU and memory requests fitted to the GPU nodes (--fit-requests, see graph::ready)",
                false => "",
            }
        ),
    }
}

/// The graph's status against its spec: the `Ready` condition's (or status') `observedGeneration`,
/// where the operator writes one, behind `metadata.generation`.
pub fn status_behind(g: &crate::k8s::kinds::DynamoGraphDeployment) -> Option<String> {
    let generation = g.metadata.generation?;
    let status = g.status.as_ref()?;
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let observed = ready
        .and_then(|c| c["observedGeneration"].as_i64())
        .or_else(|| status["observedGeneration"].as_i64())?;
    (observed < generation).then(|| {
        format!(
            "its status speaks of generation {observed}, its spec is at generation {generation}"
        )
    })
}

pub(super) async fn graph_ready(
    cluster: &Cluster,
    config: &Config,
    notes: &mut Vec<String>,
) -> Vec<String> {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = &config.namespace;
    let api: Api<crate::k8s::kinds::DynamoGraphDeployment> =
        Api::namespaced(cluster.client.clone(), ns);
    let g = match super::cluster::read_named(&api, "DynamoGraphDeployment", ns, graph::GRAPH).await
    {
        Err(problem) => return vec![problem],
        Ok(g) => g,
    };
    if !graph::is_ready(Some(&g)) {
        let mut problems = vec![format!(
            "DynamoGraphDeployment {ns}/{} is not ready: {}",
            graph::GRAPH,
            graph::describe(Some(&g))
        )];
        problems.extend(graph::pending_components(&cluster.client, ns, graph::GRAPH).await);
        return problems;
    }
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let by_type = kube::api::ListParams::default().labels(crate::operator::component::TYPE_LABEL);
    let (pods_listed, deployments_listed) = match (
        pods.list(&by_type).await,
        deployments.list(&kube::api::ListParams::default()).await,
    ) {
        (Ok(p), Ok(d)) => (p.items, d.items),
        (Err(e), _) | (_, Err(e)) => {
            return vec![format!("cannot list the graph's pods and Deployments: {e}")];
        }
    };
    let wanted = graph::desired_replicas(&g.spec);
    let mut behind: Vec<String> = status_behind(&g).into_iter().collect();
    behind.extend(graph::short_of_replicas(&wanted, pods_listed.iter()));
    behind.extend(graph::rollouts_unfinished(
        &wanted,
        deployments_listed.iter(),
    ));
    notes.push(format!(
        "phases of the newest pods: {}",
        graph::phase_timings(pods_listed.iter()).join("; ")
    ));
    if !behind.is_empty() {
        let mut problems = vec![format!(
            "DynamoGraphDeployment {ns}/{} says {:?} while a rollout is under way: {}",
            graph::GRAPH,
            graph::READY_STATE,
            behind.join("; ")
        )];
        for pod in pods_listed
            .iter()
            .filter(|p| !pod_ready(p) && p.metadata.deletion_timestamp.is_none())
        {
            let mut line = format!("not Ready: {}", graph::pod_summary(pod));
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Some(event) =
                crate::k8s::wait::latest_warning(&cluster.client, Some(ns), &name).await
            {
                line.push_str(&format!(", latest warning: {event}"));
            }
            problems.push(line);
        }
        return problems;
    }
    let frontend_pod = match frontend_service(cluster, config).await {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let forward = match crate::k8s::forward::PortForward::open(pods, ns, &frontend_pod, 8000).await
    {
        Ok(f) => f,
        Err(e) => return vec![e.to_string()],
    };
    let endpoint = match crate::openai::Endpoint::new(&forward.url(), config.api_timeouts) {
        Ok(e) => e,
        Err(e) => return vec![e.to_string()],
    };
    match crate::openai::served::served_in_a_row(&endpoint, &config.model).await {
        Ok(served) => {
            notes.push(format!(
                "{} listed by /v1/models {:.1} s and its first token served {:.0} ms into the check; \
                 {} completions in a row served ({} sent)",
                config.model,
                served.registered.as_secs_f64(),
                served.first_token.as_secs_f64() * 1000.0,
                crate::openai::served::SERVED_IN_A_ROW,
                served.sent
            ));
            Vec::new()
        }
        Err(e) => vec![format!(
            "DynamoGraphDeployment {ns}/{} says {:?}, but through {}: {e}",
            graph::GRAPH,
            graph::READY_STATE,
            forward.describe()
        )],
    }
}

/// The pods (not being deleted) of one service of the graph, found by the operator's
/// `nvidia.com/dynamo-component` label, which every release's operator puts on them (their names
/// differ: 1.x adds a hash to a worker's).
async fn component_pods_of(cluster: &Cluster, ns: &str, service: &str) -> Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let selector = format!("{}={service}", crate::operator::graph::COMPONENT_LABEL);
    pods.list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && graph::of_service(kube::ResourceExt::labels(p), service)
                })
                .collect()
        })
        .map_err(|e| format!("cannot list the pods of {service}: {e}"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(super) async fn component_pods(
    cluster: &Cluster,
    config: &Config,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let ns = &config.namespace;
    let manifest = match graph::manifest(config) {
        Ok(m) => m,
        Err(e) => return vec![e.to_string()],
    };
    let services = match crate::operator::graph::services_of(&manifest["spec"]) {
        Ok(services) => services,
        Err(e) => return vec![format!("the graph fixture: {e}")],
    };
    let mut problems = Vec::new();
    let mut images = Vec::new();
    for (service, spec) in &services {
        let pods = match component_pods_of(cluster, ns, service).await {
            Ok(p) => p,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let want = spec["replicas"].as_i64().unwrap_or(1) as usize;
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        if ready < want {
            let seen: Vec<String> = pods.iter().map(graph::pod_summary).collect();
            problems.push(format!(
                "{service}: {ready}/{want} pods Ready: {}",
                if seen.is_empty() {
                    "no pods".into()
                } else {
                    seen.join("; ")
                }
            ));
        }
        for pod in &pods {
            let pod_spec = pod.spec.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let main = pod_spec.containers.first();
            if let Some(gpu) = spec["resources"]["limits"]["gpu"].as_str() {
                let requested = main
                    .and_then(|c| c.resources.as_ref())
                    .and_then(|r| r.requests.as_ref().or(r.limits.as_ref()))
                    .and_then(|r| r.get("nvidia.com/gpu"))
                    .map(|q| q.0.clone());
                if requested.as_deref() != Some(gpu) {
                    problems.push(format!("{service} pod {name}: nvidia.com/gpu request {requested:?}, the graph asks for {gpu}"));
                }
            }
            if let Some(class) = spec["extraPodSpec"]["runtimeClassName"].as_str()
                && pod_spec.runtime_class_name.as_deref() != Some(class)
            {
                problems.push(format!(
                    "{service} pod {name}: runtimeClassName {:?}, the graph asks for {class}",
                    pod_spec.runtime_class_name
                ));
            }
            if let Some(image) = main.and_then(|c| c.image.clone()) {
                images.push((service.clone(), image));
            }
        }
    }
    let mut tags: Vec<&str> = images
        .iter()
        .map(|(_, i)| i.rsplit_once(':').map_or("", |(_, t)| t))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    if tags.len() > 1 {
        let listed: Vec<String> = images.iter().map(|(s, i)| format!("{s} {i}")).collect();
        notes.push(format!(
            "image tags differ between components (as in the guide): {}",
            listed.join(", ")
        ));
    }
    problems
}

const FRONTEND_SERVICE: &str = "vllm-v1-disagg-router-frontend";

/// The ready pod the frontend Service resolves to, from its EndpointSlices.
pub(super) async fn frontend_service(cluster: &Cluster, config: &Config) -> Result<String, String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let ns = &config.namespace;
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    let service = services
        .get_opt(FRONTEND_SERVICE)
        .await
        .map_err(|e| format!("cannot read service {ns}/{FRONTEND_SERVICE}: {e}"))?
        .ok_or_else(|| format!("service {ns}/{FRONTEND_SERVICE} does not exist"))?;
    let ports: Vec<i32> = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    if !ports.contains(&8000) {
        return Err(format!(
            "service {ns}/{FRONTEND_SERVICE} listens on {ports:?}, not 8000"
        ));
    }
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), ns);
    let selector = format!("kubernetes.io/service-name={FRONTEND_SERVICE}");
    let list = slices
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("cannot list the EndpointSlices of {FRONTEND_SERVICE}: {e}"))?;
    let endpoints: Vec<_> = list.items.iter().flat_map(|s| s.endpoints.iter()).collect();
    endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .find_map(|e| {
            e.target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| t.name.clone())
        })
        .ok_or_else(|| {
            let seen: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{:?} ready={:?}",
                        e.target_ref.as_ref().and_then(|t| t.name.clone()),
                        e.conditions.as_ref().and_then(|c| c.ready)
                    )
                })
                .collect();
            format!(
                "service {ns}/{FRONTEND_SERVICE} resolves to no ready pod (endpoints: {})",
                if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                }
            )
        })
}

pub(super) async fn pod_logs(cluster: &Cluster, config: &Config) -> Vec<String> {
    let ns = &config.namespace;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let selector = crate::operator::component::TYPE_LABEL.to_string();
    let list = match pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
    {
        Ok(l) => l.items,
        Err(e) => return vec![format!("cannot list the graph's pods: {e}")],
    };
    if list.is_empty() {
        return vec!["the graph has no pods".into()];
    }
    let mut problems = Vec::new();
    for pod in list.iter().filter(|p| pod_ready(p)) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = kube::api::LogParams {
            tail_lines: Some(20),
            ..Default::default()
        };
        match pods.logs(&name, &params).await {
            Ok(text) if !text.trim().is_empty() => {}
            Ok(_) => problems.push(format!("pod {ns}/{name}: its log is empty")),
            Err(e) => problems.push(format!(
                "pod {ns}/{name}: logs through the API server failed: {e}"
            )),
        }
    }
    problems
}

/// The graph as the API cases reach it: port-forwards to the pod the frontend Service resolves to
/// and to each worker's system port.
pub struct GraphTarget {
    /// The frontend's port 8000.
    pub frontend: crate::k8s::forward::PortForward,
    /// Each ready worker's system port.
    pub workers: Vec<(crate::dynamo::WorkerRole, crate::k8s::forward::PortForward)>,
    /// What is real and what is simulated.
    pub provenance: String,
    /// How to read the pods' logs.
    pub logs: String,
    /// The graph's pods, to describe them when a case fails.
    pub pods: Api<Pod>,
}

/// Sends one short completion and one short chat through the frontend's port-forward, each up to
/// three times, before the cases judge it: 0.4.1 fails the first request after its workers register
/// (500 "endpoint subscriber shutdown"). Says what the first attempts met, if they failed.
async fn warm_up(frontend: &crate::k8s::forward::PortForward, config: &Config) -> Option<String> {
    let Ok(endpoint) = crate::openai::Endpoint::new(&frontend.url(), config.api_timeouts) else {
        return None;
    };
    let mut met = Vec::new();
    for (path, body) in [
        (
            "/v1/completions",
            serde_json::json!({"model": config.model, "prompt": "warm-up", "max_tokens": 1}),
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({"model": config.model, "messages": [{"role": "user", "content": "warm-up"}], "max_tokens": 1}),
        ),
    ] {
        for attempt in 1..=3 {
            match endpoint.post_json(path, &body).await {
                crate::openai::Answer::Answered(c) if c.status == 200 => break,
                crate::openai::Answer::Answered(c) => met.push(format!(
                    "{path} attempt {attempt}: {} {}",
                    c.status,
                    crate::openai::check::excerpt(&c.body, 100)
                )),
                crate::openai::Answer::Unanswered(reason) => {
                    met.push(format!("{path} attempt {attempt}: {reason}"))
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    (!met.is_empty()).then(|| {
        format!(
            "warm-up requests before the cases failed first: {}",
            met.join("; ")
        )
    })
}

/// Brings the graph up for `case` (with every stage before it) and opens the port-forwards.
pub async fn graph_target(config: &Config, exe: &Path, case: &str) -> Result<GraphTarget, Unmet> {
    if let Some(blocker) = blockers().find(Need::Target) {
        return Err(Unmet::Blocked(blocker));
    }
    let session = session_for(config, exe, case).await?;
    ensure(session, Stage::Graph, config, case).await?;
    reach(&session.cluster, config)
        .await
        .map_err(|e| blockers().fail(case, Need::Target, e))
}

async fn reach(cluster: &Cluster, config: &Config) -> Result<GraphTarget, String> {
    use crate::k8s::forward::PortForward;
    let ns = &config.namespace;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let frontend_pod = frontend_service(cluster, config).await?;
    let frontend = PortForward::open(pods.clone(), ns, &frontend_pod, 8000)
        .await
        .map_err(|e| e.to_string())?;
    let mut workers = Vec::new();
    let selector = format!("{}=worker", crate::operator::component::TYPE_LABEL);
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("cannot list the worker pods: {e}"))?;
    for pod in listed
        .items
        .iter()
        .filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
    {
        let Some(main) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
            continue;
        };
        let words = crate::bridge::translate::command_words(main);
        let role = if words.iter().any(|w| w == "--is-prefill-worker") {
            crate::dynamo::WorkerRole::Prefill
        } else {
            crate::dynamo::WorkerRole::Decode
        };
        if workers.iter().any(|(r, _)| *r == role) {
            continue;
        }
        let port = main
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("system"))
            .map_or(crate::operator::component::SYSTEM_PORT, |p| {
                p.container_port
            });
        let name = pod.metadata.name.clone().unwrap_or_default();
        let forward = PortForward::open(pods.clone(), ns, &name, port as u16)
            .await
            .map_err(|e| e.to_string())?;
        workers.push((role, forward));
    }
    let warm_up = warm_up(&frontend, config).await;
    let mut logs = format!("kubectl -n {ns} logs <pod>");
    if cluster.provider == ProviderKind::Local {
        logs.push_str(&format!(
            " (served by kwok from {})",
            crate::cluster::agent::dir(&config.cache_dir)
                .join("pods")
                .display()
        ));
    }
    let mut provenance = graph_provenance(cluster, config);
    if let Some(note) = warm_up {
        eprintln!("dynamo-conformance: {note}");
        provenance.push_str(&format!("; {note}"));
    }
    Ok(GraphTarget {
        frontend,
        workers,
        provenance,
        logs,
        pods,
    })
}
