//! One simulated pod's life: its process started, probed, restarted with back-off, and stopped with the pod.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;

use super::crilog::CriLog;
use super::kubelet;
use super::translate::{self, Launch, Role};
use super::{BridgeError, Shared};
use crate::k8s::kinds::{DynamoGraphDeployment, KwokLogs, KwokPortForward};
use crate::release::{DynamoVersion, Planes};

/// The pod annotation the bridge sets to `true` while the process passes the readiness probe;
/// kwok's stages turn the pod Ready or not Ready from it.
pub const READY_ANNOTATION: &str = "dynamo-conformance/process-ready";
/// The pod annotation with the bridge's last observation of the process, one line.
pub const STATUS_ANNOTATION: &str = "dynamo-conformance/process-status";
/// The graph annotation naming the Dynamo release for images whose tag names none.
pub const VERSION_ANNOTATION: &str = "dynamo-conformance/dynamo-version";

const PROBE_PERIOD: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(80);
/// How long a 0.4.x worker waits for its frontend (and a prefill worker for its decode worker).
const ORDER_WAIT: Duration = Duration::from_secs(180);

async fn annotate(shared: &Shared, pod: &Pod, ready: bool, status: &str) {
    let patch = json!({ "metadata": { "annotations": {
        READY_ANNOTATION: ready.to_string(),
        STATUS_ANNOTATION: crate::openai::check::excerpt(status, 300),
    } } });
    patch_annotations(shared, pod, patch).await;
}

async fn patch_status(shared: &Shared, pod: &Pod, status: serde_json::Value) {
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    if let Err(e) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
    {
        eprintln!(
            "bridge: cannot write the status of pod {}: {e}",
            pod.name_any()
        );
    }
}

async fn patch_annotations(shared: &Shared, pod: &Pod, patch: serde_json::Value) {
    let api: Api<Pod> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    if let Err(e) = api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        eprintln!("bridge: cannot annotate pod {}: {e}", pod.name_any());
    }
}

/// The kubelet's `BackOff` warning for a container that keeps exiting.
async fn back_off_event(shared: &Shared, pod: &Pod, container: &str) {
    let note = format!(
        "Back-off restarting failed container {container} in pod {}_{}({})",
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    );
    let recorder = kubelet::KubeletEvents::new(&shared.client);
    kubelet::warn(&recorder, pod, container, "BackOff", note, "Restarting").await;
}

/// The literal value of `var` in the pod's first container.
fn container_env_value(pod: &Pod, var: &str) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.iter().flatten().find(|e| e.name == var))
        .and_then(|e| e.value.clone())
}

/// `url` with its port swapped for one nothing listens on (port 1, tcpmux, is closed here).
fn refused(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_port(Some(1));
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Where a URL the pod names for the platform leads, as a cluster's DNS and kube-proxy would take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// A Service with a ready endpoint: the platform's local process.
    Platform,
    /// A Service with no ready endpoint: a closed port (kube-proxy rejects the connection).
    Refused,
    /// No Service of that name (or not a Service name at all): the URL as written.
    AsWritten,
}

/// Where the host of `url` (the first of a comma-separated list; `host:port` without a scheme
/// too) leads: a Service of the cluster as its DNS names one (`name`, `name.ns`,
/// `name.ns.svc[.cluster.local]`), judged by its EndpointSlices' ready endpoints.
async fn reach(shared: &Shared, pod: &Pod, url: &str) -> Reach {
    let first = url.split(',').next().unwrap_or_default().trim();
    let with_scheme = if first.contains("://") {
        first.to_string()
    } else {
        format!("http://{first}")
    };
    let Some(host) = url::Url::parse(&with_scheme)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return Reach::AsWritten;
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Reach::AsWritten;
    }
    let mut labels = host.split('.');
    let name = labels.next().unwrap_or_default();
    let namespace = labels
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| pod.namespace().unwrap_or_default());
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(shared.client.clone(), &namespace);
    if !matches!(services.get_opt(name).await, Ok(Some(_))) {
        return Reach::AsWritten;
    }
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(shared.client.clone(), &namespace);
    let selector = format!("kubernetes.io/service-name={name}");
    let ready = slices
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|l| {
            l.items.iter().any(|s| {
                s.endpoints
                    .iter()
                    .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            })
        })
        .unwrap_or(false);
    if ready {
        Reach::Platform
    } else {
        Reach::Refused
    }
}

/// The release a pod runs: its image's tag when that names a release, else its graph's annotation.
async fn version_of(
    shared: &Shared,
    pod: &Pod,
) -> Result<(DynamoVersion, Option<String>), BridgeError> {
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let tag = image
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    if let Ok(version) = tag.parse::<DynamoVersion>() {
        return Ok((version, None));
    }
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let graph = container
        .and_then(|c| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == "DYN_PARENT_DGD_K8S_NAME")
        })
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    let graphs: Api<DynamoGraphDeployment> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let annotated = graphs
        .get_opt(&graph)
        .await
        .ok()
        .flatten()
        .and_then(|g| g.annotations().get(VERSION_ANNOTATION).cloned());
    match annotated.as_deref().map(str::parse::<DynamoVersion>) {
        Some(Ok(version)) => Ok((
            version,
            Some(format!(
                "image tag {tag:?} names no release this suite runs; running Dynamo {version}, the graph's release"
            )),
        )),
        _ => Err(BridgeError::Pod {
            pod: pod.name_any(),
            reason: format!(
                "image {image:?} names no Dynamo release this suite runs (known: {:?})",
                DynamoVersion::all()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
            ),
        }),
    }
}

async fn secrets_of(shared: &Shared, pod: &Pod) -> BTreeMap<String, BTreeMap<String, String>> {
    let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
        return BTreeMap::new();
    };
    let mut names: Vec<String> = container
        .env_from
        .iter()
        .flatten()
        .filter_map(|f| f.secret_ref.as_ref().map(|s| s.name.clone()))
        .collect();
    names.extend(container.env.iter().flatten().filter_map(|e| {
        e.value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()
            .map(|k| k.name.clone())
    }));
    let api: Api<Secret> =
        Api::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
    let mut out = BTreeMap::new();
    for name in names {
        if let Ok(Some(secret)) = api.get_opt(&name).await {
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            out.insert(name, data);
        }
    }
    out
}

/// Creates the pod's kwok PortForward and Logs, owned by the pod so they go with it.
async fn route(
    shared: &Shared,
    pod: &Pod,
    launch: &Launch,
    log: &CriLog,
) -> Result<(), BridgeError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let owner = json!([{ "apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.uid() }]);
    let labels = json!({ crate::k8s::MANAGED_BY_LABEL.0: crate::k8s::MANAGED_BY_LABEL.1 });
    let forwards: Vec<_> = launch
        .ports
        .iter()
        .map(|(pod_port, local)| json!({ "ports": [pod_port], "target": { "address": "127.0.0.1", "port": local } }))
        .collect();
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let params = PatchParams::apply(super::FIELD_MANAGER).force();
    let meta = json!({ "name": name, "namespace": ns, "ownerReferences": owner, "labels": labels });
    let forward = json!({ "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "PortForward", "metadata": meta, "spec": { "forwards": forwards } });
    let logs = json!({ "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs", "metadata": meta,
        "spec": { "logs": [{ "containers": [container], "logsFile": log.path().display().to_string(), "follow": true }] } });
    let api_error = |what: &str| {
        let what = format!("create the kwok {what} of pod {ns}/{name}");
        move |source| BridgeError::Api {
            action: what,
            source,
        }
    };
    Api::<KwokPortForward>::namespaced(shared.client.clone(), &ns)
        .patch(&name, &params, &Patch::Apply(&forward))
        .await
        .map_err(api_error("PortForward"))?;
    Api::<KwokLogs>::namespaced(shared.client.clone(), &ns)
        .patch(&name, &params, &Patch::Apply(&logs))
        .await
        .map_err(api_error("Logs"))?;
    Ok(())
}

/// Prepares everything but the process: release, environment, secrets, platform, ports, routes.
async fn prepare(shared: &Arc<Shared>, pod: &Pod, log: &CriLog) -> Result<Launch, BridgeError> {
    let (version, note) = version_of(shared, pod).await?;
    if let Some(note) = note {
        log.note(&note);
    }
    let cache = shared.cache_dir.clone();
    let (env, model) = tokio::task::spawn_blocking(move || {
        let env = crate::dynamo::install::ensure_env(&cache, version)?;
        let model = crate::dynamo::model::ensure_model(&cache, &env)?;
        Ok::<_, crate::dynamo::DynamoError>((env, model))
    })
    .await
    .map_err(|e| BridgeError::Setup {
        what: "install Dynamo".into(),
        detail: e.to_string(),
    })?
    .map_err(|e| BridgeError::Setup {
        what: format!("install Dynamo {version}"),
        detail: e.to_string(),
    })?;
    let (etcd_url, nats_url) = match version.release().planes {
        Planes::EtcdAndNats => {
            let platform = shared.platform().await?;
            // What a cluster's DNS and kube-proxy would reach; a closed port where they refuse.
            let to = |var: &'static str, local: String| async move {
                let reached = match container_env_value(pod, var) {
                    Some(url) => reach(shared, pod, &url).await,
                    None => Reach::Platform,
                };
                match reached {
                    Reach::Platform => Some(local),
                    Reach::Refused => {
                        log.note(&format!(
                            "{var}: its Service has no ready endpoint, so the connection is refused"
                        ));
                        Some(refused(&local))
                    }
                    Reach::AsWritten => {
                        log.note(&format!(
                            "{var}: names no Service of the cluster; left as written"
                        ));
                        None
                    }
                }
            };
            (
                to("ETCD_ENDPOINTS", platform.etcd_url).await,
                to("NATS_SERVER", platform.nats_url).await,
            )
        }
        Planes::FileTcpZmq => (None, None),
    };
    let hf_endpoint = match version.release().asks_the_hub {
        true => Some(shared.hub(&model, None).await?),
        false => None,
    };
    let context = translate::LaunchContext {
        version,
        python: env.python(),
        model_path: model.path.display().to_string(),
        hf_home: model.hf_home().display().to_string(),
        secrets: secrets_of(shared, pod).await,
        etcd_url,
        nats_url,
        // One store per Kubernetes namespace, as the operator's Kubernetes discovery scopes it;
        // each frontend scopes itself further to its Dynamo namespace (`DYN_NAMESPACE`).
        discovery_dir: shared
            .dir
            .join("discovery")
            .join(pod.namespace().unwrap_or_default()),
        hf_endpoint,
    };
    let mut free = || {
        crate::dynamo::deployment::free_port().map_err(|e| BridgeError::Setup {
            what: "pick a port".into(),
            detail: e.to_string(),
        })
    };
    let launch = translate::launch(pod, &context, &mut free)?;
    if let Some(name) = translate::flag_value(&launch.args, "--model-name") {
        model.hf_snapshot(&name).map_err(|e| BridgeError::Setup {
            what: format!("lay the model out as {name} in the Hugging Face cache"),
            detail: e.to_string(),
        })?;
        // Mirrored whatever the worker's own release: a frontend of another may ask the Hub.
        let (model_dir, named) = (model.clone(), name.clone());
        let mirrored =
            tokio::task::spawn_blocking(move || crate::dynamo::hub::mirror(&model_dir, &named))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        match mirrored {
            Err(detail) if context.hf_endpoint.is_some() => {
                return Err(BridgeError::Setup {
                    what: format!("mirror the model as {name} for the local Hugging Face Hub"),
                    detail,
                });
            }
            Err(detail) => log.note(&format!(
                "the model is not mirrored for a local Hugging Face Hub ({detail}); a frontend that asks the Hub will not find {name}"
            )),
            Ok(()) => {}
        }
        if context.hf_endpoint.is_some() {
            shared.hub(&model, Some(&name)).await?;
            log.note(&format!(
                "the Hugging Face Hub simulated: {} at {} serves the model as {name}",
                crate::dynamo::hub::SERVER,
                context.hf_endpoint.as_deref().unwrap_or_default()
            ));
        }
    }
    let probes = &launch.probes;
    if [&probes.startup, &probes.readiness, &probes.liveness]
        .into_iter()
        .flatten()
        .any(|p| matches!(p.action, super::probe::Action::Exec { .. }))
    {
        let cache = shared.cache_dir.clone();
        let setup = |detail: String| BridgeError::Setup {
            what: "install curl and jq".into(),
            detail,
        };
        tokio::task::spawn_blocking(move || {
            crate::debian::ensure(super::probe::PROGRAMS, &cache, "the pods' exec probes")
        })
        .await
        .map_err(|e| setup(e.to_string()))?
        .map_err(|e| setup(e.to_string()))?;
    }
    log.note(&format!(
        "Dynamo {version} from PyPI: {} {}",
        launch.program.display(),
        launch.args.join(" ")
    ));
    for note in &launch.notes {
        log.note(note);
    }
    let routes: Vec<String> = launch
        .ports
        .iter()
        .map(|(p, l)| format!("{p} -> 127.0.0.1:{l}"))
        .collect();
    log.note(&format!("ports: {}", routes.join(", ")));
    route(shared, pod, &launch, log).await?;
    Ok(launch)
}

fn spawn(
    launch: &Launch,
    log: &CriLog,
    dir: &std::path::Path,
) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(
            ["PATH", "HOME", "LANG", "TMPDIR"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; the process ends with the agent's main thread.
    unsafe {
        command.as_std_mut().pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log.clone().copy("stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log.clone().copy("stderr", err));
    }
    Ok(child)
}

/// Whether the process accepts connections on any of its ports (an ordered start, as 0.4.x's: workers
/// may start once the frontend answers at all; it says 503 until one registers).
async fn answers(launch: &Launch) -> bool {
    for port in launch.ports.values() {
        if tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

/// Stops the process as the kubelet stops a container: SIGTERM, then SIGKILL after `grace`.
async fn stop_process(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: the pid of the child this task started and has not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Waits until the registry shows `role` of `dyn_ns` ready, at most [`ORDER_WAIT`].
async fn await_peer(
    shared: &Shared,
    dyn_ns: &str,
    role: Role,
    log: &CriLog,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let started = Instant::now();
    log.note(&format!(
        "ordered start: waiting for the {role:?} of {dyn_ns} to serve before starting"
    ));
    while started.elapsed() < ORDER_WAIT {
        if shared.is_ready(dyn_ns, role) {
            return true;
        }
        tokio::select! {
            _ = stop.changed() => return false,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    log.note(&format!(
        "the {role:?} of {dyn_ns} did not serve within {ORDER_WAIT:?}; starting anyway"
    ));
    true
}

/// Serves `pod` until `stop` turns true.
pub async fn serve(shared: Arc<Shared>, pod: Pod, mut stop: watch::Receiver<bool>) {
    let name = pod.name_any();
    let dir = shared.dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        name,
        pod.uid().unwrap_or_default()
    ));
    let log = match CriLog::create(&dir.join("main.log")) {
        Ok(l) => l,
        Err(e) => {
            annotate(&shared, &pod, false, &format!("cannot create its log: {e}")).await;
            return;
        }
    };
    annotate(&shared, &pod, false, "preparing its process").await;
    let launch = tokio::select! {
        _ = stop.changed() => return,
        prepared = prepare(&shared, &pod, &log) => match prepared {
            Ok(l) => l,
            Err(e) => {
                let reason = match e {
                    BridgeError::Pod { reason, .. } => reason,
                    other => other.to_string(),
                };
                log.note(&format!("cannot start: {reason}"));
                annotate(&shared, &pod, false, &format!("cannot start: {reason}")).await;
                let _ = stop.changed().await;
                return;
            }
        }
    };
    let key = (launch.dynamo_namespace.clone(), launch.role);
    if launch.version.release().ordered_start {
        let wait_for = match launch.role {
            Role::Frontend => None,
            Role::Decode => Some(Role::Frontend),
            Role::Prefill => Some(Role::Decode),
        };
        if let Some(peer) = wait_for {
            annotate(
                &shared,
                &pod,
                false,
                &format!(
                    "waiting for the {peer:?} of {} (Dynamo {}'s ordered start)",
                    launch.dynamo_namespace, launch.version
                ),
            )
            .await;
            if !await_peer(&shared, &launch.dynamo_namespace, peer, &log, &mut stop).await {
                return;
            }
        }
    }
    let http = reqwest::Client::new();
    let recorder = kubelet::KubeletEvents::new(&shared.client);
    let mut backoff = FIRST_BACKOFF;
    let mut restarts = 0u32;
    let mut last_exit: Option<String> = None;
    let mut last_end: Option<kubelet::Termination> = None;
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .cloned()
        .unwrap_or_default();
    loop {
        let started_at = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut child = match spawn(&launch, &log, &dir) {
            Ok(c) => c,
            Err(e) => {
                log.note(&format!("cannot start {}: {e}", launch.program.display()));
                annotate(
                    &shared,
                    &pod,
                    false,
                    &format!("cannot start its process: {e}"),
                )
                .await;
                let _ = stop.changed().await;
                return;
            }
        };
        let pid = child.id().unwrap_or_default();
        log.note(&format!("started pid {pid} (restarts: {restarts})"));
        if let Some(ended) = &last_end {
            patch_status(
                &shared,
                &pod,
                kubelet::restarted(&container, restarts, ended, &started_at),
            )
            .await;
        }
        let started = Instant::now();
        let probes = &launch.probes;
        let mut started_up = probes.startup.is_none();
        let mut next_liveness = probes.liveness.as_ref().map(|p| started + p.initial_delay);
        let mut liveness_failures = 0u32;
        let mut ready = false;
        let mut last = String::new();
        let mut last_warning = String::new();
        let exit = loop {
            tokio::select! {
                _ = stop.changed() => {
                    stop_process(&mut child, Duration::from_secs(5)).await;
                    shared.set_ready(&key, false);
                    log.note("pod deleted: process stopped");
                    return;
                }
                status = child.wait() => break status,
                _ = tokio::time::sleep(PROBE_PERIOD) => {
                    let mut warnings = Vec::new();
                    if let Some(startup) = probes.startup.as_ref().filter(|_| !started_up)
                        && started.elapsed() >= startup.initial_delay
                    {
                        match startup.check(&http, &shared.dir).await {
                            Ok(()) => started_up = true,
                            Err(e) if started.elapsed() > startup.initial_delay + startup.period * startup.failure_threshold => {
                                kubelet::warn(&recorder, &pod, &container.name, "Unhealthy", format!("Startup probe failed: {e}"), "Probing").await;
                                log.note(&format!("startup probe failed {} times: restarting", startup.failure_threshold));
                                stop_process(&mut child, Duration::from_secs(5)).await;
                                break child.wait().await;
                            }
                            Err(_) => {}
                        }
                    }
                    if let (true, Some(liveness), Some(due)) = (started_up, probes.liveness.as_ref(), next_liveness)
                        && Instant::now() >= due
                    {
                        next_liveness = Some(Instant::now() + liveness.period);
                        match liveness.check(&http, &shared.dir).await {
                            Ok(()) => liveness_failures = 0,
                            Err(e) => {
                                liveness_failures += 1;
                                kubelet::warn(&recorder, &pod, &container.name, "Unhealthy", format!("Liveness probe failed: {e}"), "Probing").await;
                                if liveness_failures >= liveness.failure_threshold {
                                    log.note(&format!("liveness probe failed {liveness_failures} times ({e}): restarting"));
                                    annotate(&shared, &pod, false, &format!("pid {pid} failed its liveness probe: restarting")).await;
                                    kubelet::record(&recorder, &pod, &container.name, kube::runtime::events::EventType::Normal, "Killing",
                                        format!("Container {} failed liveness probe, will be restarted", container.name), "Killing").await;
                                    stop_process(&mut child, Duration::from_secs(5)).await;
                                    break child.wait().await;
                                }
                            }
                        }
                    }
                    // Readiness: probed every PROBE_PERIOD at most (the kubelet waits periodSeconds),
                    // so a pod turns Ready sooner, never later; Ready on the first pass, not Ready on
                    // the first failure.
                    let result = match (started_up, probes.readiness.as_ref()) {
                        (false, _) => Err("its startup probe has not passed yet".to_string()),
                        (true, None) => Ok(()),
                        (true, Some(p)) if started.elapsed() < p.initial_delay => Err(format!(
                            "its readiness probe starts after its initial delay of {:?}", p.initial_delay
                        )),
                        (true, Some(p)) => p.check(&http, &shared.dir).await.inspect_err(|e| {
                            warnings.push(format!("Readiness probe failed: {e}"));
                        }),
                    };
                    for warning in warnings {
                        if warning != last_warning {
                            kubelet::warn(&recorder, &pod, &container.name, "Unhealthy", warning.clone(), "Probing").await;
                            last_warning = warning;
                        }
                    }
                    let serving = match launch.role {
                        Role::Frontend => answers(&launch).await,
                        _ => result.is_ok(),
                    };
                    shared.set_ready(&key, serving);
                    let status = match &result {
                        Ok(()) => format!("pid {pid} passes its readiness probe"),
                        Err(e) => format!("pid {pid} is not Ready: {e}"),
                    };
                    let status = match &last_exit {
                        Some(exit) => format!("{status}; restarted {restarts} times, last exit: {exit}"),
                        None => status,
                    };
                    if result.is_ok() != ready || status != last {
                        ready = result.is_ok();
                        annotate(&shared, &pod, ready, &status).await;
                        last = status;
                    }
                }
            }
        };
        shared.set_ready(&key, false);
        let exit_code = exit
            .as_ref()
            .ok()
            .and_then(|s| {
                use std::os::unix::process::ExitStatusExt as _;
                s.code().or_else(|| s.signal().map(|g| 128 + g))
            })
            .unwrap_or(-1);
        let code = exit
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let tail = log.tail(3);
        // The kubelet's termination message: the end of the process's own log.
        let ended = kubelet::Termination {
            exit_code,
            message: log.tail_lines(20).join("\n"),
            started_at: started_at.clone(),
            finished_at: k8s_openapi::jiff::Timestamp::now().to_string(),
        };
        log.note(&format!(
            "process exited ({code}); restarting in {backoff:?}"
        ));
        last_exit = Some(format!("{code} at {}", k8s_openapi::jiff::Timestamp::now()));
        // The status first: once Ready is False, kwok's unready stage leaves it as written.
        let (status, annotations) =
            kubelet::crash_loop(&pod, &container, restarts + 1, backoff, &ended);
        patch_status(&shared, &pod, status).await;
        patch_annotations(&shared, &pod, annotations).await;
        back_off_event(&shared, &pod, &container.name).await;
        last_end = Some(ended);
        annotate(
            &shared,
            &pod,
            false,
            &format!("process exited ({code}), restart in {backoff:?}; its log ends: {tail}"),
        )
        .await;
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        restarts += 1;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
