//! The kubelet's steps before a container starts, on kwok's nodes: pulling its image, resolving the Secrets and ConfigMaps its environment names, the operator's flags.
//!
//! kwok starts a pod only once [`CONTAINERS_ANNOTATION`] says [`CREATED`] (the stages in
//! `fixtures/local/k8s/kwokctl.yaml` select on it). A pod whose image the local registry has
//! withdrawn ([`withdraw`]) or whose environment names a missing Secret, ConfigMap or key waits
//! instead, as a kubelet would show it: `ErrImagePull` then `ImagePullBackOff`, or
//! `CreateContainerConfigError`, with the kubelet's events, and is checked again every
//! [`RECHECK`] until it can start. The operator's `/manager` is started with its flags first
//! ([`FLAGS_ONLY_ENV`]): one its release does not define crash-loops the pod.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::operator::manager::FLAGS_ONLY_ENV;
use tokio::sync::watch;

/// The pod annotation that lets kwok start the pod: [`CREATED`] once every container could be
/// created, [`WAITING`] while one cannot.
pub const CONTAINERS_ANNOTATION: &str = "dynamo-conformance/containers";
/// Every container's image is pulled and its environment resolved.
pub const CREATED: &str = "created";
/// A container waits (its status says why).
pub const WAITING: &str = "waiting";
/// How often a waiting pod is checked again (a kubelet backs off from 10 s up to 5 min).
pub const RECHECK: Duration = Duration::from_secs(10);

/// Why a container cannot be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The container's name.
    pub container: String,
    /// The waiting reason: `ErrImagePull` (first try), `ImagePullBackOff` or
    /// `CreateContainerConfigError`.
    pub reason: &'static str,
    /// The waiting message, worded as the kubelet words it.
    pub message: String,
    /// The container's image.
    pub image: String,
    /// How its process ended, for a container that started and exited at once.
    pub terminated: Option<Termination>,
}

/// `<bridge dir>/registry/withdrawn`: the images the local registry no longer serves, one a line.
pub fn withdrawn_path(bridge_dir: &Path) -> PathBuf {
    bridge_dir.join("registry").join("withdrawn")
}

/// The images the local registry no longer serves (none when the file is absent).
pub fn withdrawn(bridge_dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(withdrawn_path(bridge_dir))
        .unwrap_or_default()
        .lines()
        .map(|l| normalized(l.trim()))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Withdraws `image` from the local registry, as an image is removed upstream: pods that need it
/// and are not running yet wait in `ImagePullBackOff`.
///
/// # Errors
/// The file cannot be written.
pub fn withdraw(bridge_dir: &Path, image: &str) -> std::io::Result<()> {
    let mut images = withdrawn(bridge_dir);
    images.insert(normalized(image));
    write_withdrawn(bridge_dir, &images)
}

/// Publishes `image` again.
///
/// # Errors
/// The file cannot be written.
pub fn restore(bridge_dir: &Path, image: &str) -> std::io::Result<()> {
    let mut images = withdrawn(bridge_dir);
    images.remove(&normalized(image));
    write_withdrawn(bridge_dir, &images)
}

fn write_withdrawn(bridge_dir: &Path, images: &BTreeSet<String>) -> std::io::Result<()> {
    let path = withdrawn_path(bridge_dir);
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    let text: String = images.iter().map(|i| format!("{i}\n")).collect();
    std::fs::write(path, text)
}

/// `docker.io/library/etcd:3` and `etcd:3` are one image.
fn normalized(image: &str) -> String {
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    image.strip_prefix("library/").unwrap_or(image).to_string()
}

/// The keys of each Secret or ConfigMap of the pod's namespace, by name.
pub type Keys = BTreeMap<String, BTreeSet<String>>;

/// What keeps each container of `pod` from being created; empty when all can be. `retry` is true
/// once the pod was tried before (`ErrImagePull` becomes `ImagePullBackOff`).
pub fn check(
    pod: &Pod,
    withdrawn: &BTreeSet<String>,
    secrets: &Keys,
    config_maps: &Keys,
    retry: bool,
) -> Vec<Blocked> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let blocked = |reason, message| Blocked {
                container: c.name.clone(),
                reason,
                message,
                image: image.clone(),
                terminated: None,
            };
            if withdrawn.contains(&normalized(&image)) {
                let pull = format!(
                    "failed to pull and unpack image \"{image}\": not found (withdrawn from the local provider's registry)"
                );
                return Some(if retry {
                    blocked(
                        "ImagePullBackOff",
                        format!("Back-off pulling image \"{image}\": ErrImagePull: {pull}"),
                    )
                } else {
                    blocked("ErrImagePull", pull)
                });
            }
            unresolved(c, &pod.namespace().unwrap_or_default(), secrets, config_maps)
                .map(|m| blocked("CreateContainerConfigError", m))
        })
        .collect()
}

/// The first Secret, ConfigMap or key the container's environment names that does not exist.
fn unresolved(
    c: &Container,
    namespace: &str,
    secrets: &Keys,
    config_maps: &Keys,
) -> Option<String> {
    let missing =
        |kind: &str, store: &Keys, name: &str, key: Option<&str>, optional: Option<bool>| {
            if optional == Some(true) {
                return None;
            }
            match (store.get(name), key) {
                (None, _) => Some(format!("{} \"{name}\" not found", kind.to_lowercase())),
                (Some(keys), Some(key)) if !keys.contains(key) => Some(format!(
                    "couldn't find key {key} in {kind} {namespace}/{name}"
                )),
                _ => None,
            }
        };
    for from in c.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref
            && let Some(m) = missing("Secret", secrets, &s.name, None, s.optional)
        {
            return Some(m);
        }
        if let Some(m) = from
            .config_map_ref
            .as_ref()
            .and_then(|r| missing("ConfigMap", config_maps, &r.name, None, r.optional))
        {
            return Some(m);
        }
    }
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.secret_key_ref
            && let Some(m) = missing("Secret", secrets, &r.name, Some(&r.key), r.optional)
        {
            return Some(m);
        }
        if let Some(r) = &from.config_map_key_ref
            && let Some(m) = missing("ConfigMap", config_maps, &r.name, Some(&r.key), r.optional)
        {
            return Some(m);
        }
    }
    None
}

/// The pod status a kubelet reports while `blocked` containers wait and the others run.
pub fn waiting_status(pod: &Pod, blocked: &[Blocked]) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut statuses = Vec::new();
    let mut running = 0;
    for c in &spec.containers {
        let image = c.image.clone().unwrap_or_default();
        match blocked.iter().find(|b| b.container == c.name) {
            Some(b) => {
                let restarts = i32::from(b.terminated.is_some())
                    + pod
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|cs| cs.iter().find(|s| s.name == c.name))
                        .map_or(0, |s| s.restart_count);
                let mut status = json!({
                    "name": c.name, "image": image, "imageID": "", "ready": false, "started": false,
                    "restartCount": restarts,
                    "state": { "waiting": { "reason": b.reason, "message": b.message } },
                });
                if let Some(t) = &b.terminated {
                    status["lastState"] = t.last_state();
                }
                statuses.push(status);
            }
            None => {
                running += 1;
                statuses.push(json!({
                    "name": c.name, "image": image, "imageID": "", "ready": true, "started": true,
                    "restartCount": 0, "state": { "running": { "startedAt": now } },
                }));
            }
        }
    }
    let names: Vec<&str> = blocked.iter().map(|b| b.container.as_str()).collect();
    let not_ready = format!("containers with unready status: [{}]", names.join(" "));
    let condition = |type_: &str, status: &str| {
        let mut c = json!({ "type": type_, "status": status, "lastTransitionTime": now });
        if status == "False" {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(not_ready);
        }
        c
    };
    json!({ "status": {
        "phase": if running > 0 { "Running" } else { "Pending" },
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", "False"),
            condition("Ready", "False"),
        ],
        "containerStatuses": statuses,
    } })
}

/// The pod annotation with a backed container's restart count, which kwok's stages carry into
/// its status.
pub const RESTARTS_ANNOTATION: &str = "dynamo-conformance/restarts";
/// The pod annotation with a backed container's last termination (`lastState`, JSON on one line),
/// which kwok's stages carry into its status.
pub const LAST_STATE_ANNOTATION: &str = "dynamo-conformance/last-state";

/// How a backed container's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Its exit code (128 + the signal for a killed process).
    pub exit_code: i32,
    /// The last lines of its log, the kubelet's termination message.
    pub message: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// When it ended, RFC 3339.
    pub finished_at: String,
}

impl Termination {
    /// `lastState` of a container status.
    pub fn last_state(&self) -> serde_json::Value {
        let reason = if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        json!({ "terminated": {
            "exitCode": self.exit_code, "reason": reason, "message": self.message,
            "startedAt": self.started_at, "finishedAt": self.finished_at,
        } })
    }
}

/// The status and annotations of a pod whose backed container `container` exited and waits
/// `backoff` before its restart number `restarts` (`CrashLoopBackOff`, as a kubelet shows it).
pub fn crash_loop(
    pod: &Pod,
    container: &Container,
    restarts: u32,
    backoff: Duration,
    ended: &Termination,
) -> (serde_json::Value, serde_json::Value) {
    let message = format!(
        "back-off {}s restarting failed container={} pod={}_{}({})",
        backoff.as_secs(),
        container.name,
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
        pod.uid().unwrap_or_default()
    );
    let not_ready = format!("containers with unready status: [{}]", container.name);
    let condition = |type_: &str| {
        json!({ "type": type_, "status": "False", "reason": "ContainersNotReady",
                "message": not_ready, "lastTransitionTime": ended.finished_at })
    };
    let status = json!({ "status": {
        "conditions": [condition("ContainersReady"), condition("Ready")],
        "containerStatuses": [{
            "name": container.name, "image": container.image, "imageID": "", "ready": false,
            "started": false, "restartCount": restarts,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": message } },
            "lastState": ended.last_state(),
        }],
    } });
    let annotations = json!({ "metadata": { "annotations": {
        RESTARTS_ANNOTATION: restarts.to_string(),
        LAST_STATE_ANNOTATION: ended.last_state().to_string(),
    } } });
    (status, annotations)
}

/// The status of a pod whose backed container `container` runs again (not yet Ready) after
/// `restarts` restarts, the last ending as `ended`.
pub fn restarted(
    container: &Container,
    restarts: u32,
    ended: &Termination,
    started_at: &str,
) -> serde_json::Value {
    json!({ "status": { "containerStatuses": [{
        "name": container.name, "image": container.image, "imageID": "", "ready": false,
        "started": true, "restartCount": restarts,
        "state": { "running": { "startedAt": started_at } },
        "lastState": ended.last_state(),
    }] } })
}

/// The pods kwok has not started, scheduled and not going away.
fn to_create(pod: &Pod) -> bool {
    super::scheduled(pod)
        && !super::started(pod)
        && pod
            .annotations()
            .get(CONTAINERS_ANNOTATION)
            .map(String::as_str)
            != Some(CREATED)
}

async fn keys<K>(client: &Client, namespace: &str) -> Result<Keys, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + KeysOf,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|o| (o.name_any(), o.keys()))
        .collect())
}

/// The keys an object holds.
trait KeysOf {
    fn keys(&self) -> BTreeSet<String>;
}

impl KeysOf for Secret {
    fn keys(&self) -> BTreeSet<String> {
        let data = self.data.iter().flatten().map(|(k, _)| k.clone());
        data.chain(self.string_data.iter().flatten().map(|(k, _)| k.clone()))
            .collect()
    }
}

impl KeysOf for ConfigMap {
    fn keys(&self) -> BTreeSet<String> {
        let data = self.data.iter().flatten().map(|(k, _)| k.clone());
        data.chain(self.binary_data.iter().flatten().map(|(k, _)| k.clone()))
            .collect()
    }
}

/// The kubelet's event recorder: one series per (type, reason, note, object), as client-go's
/// correlator keys them.
///
/// kube-runtime's [`Recorder`] keys a series without its note, so a `Liveness probe failed` after
/// a `Readiness probe failed` about the same container would only raise the first event's count
/// and its words would be lost. Here each distinct note gets its own [`Recorder`] (a repeat of
/// the same note still counts up its series); at most [`KubeletEvents::NOTES`] are remembered.
pub struct KubeletEvents {
    client: Client,
    by_note: tokio::sync::Mutex<HashMap<String, Recorder>>,
}

impl KubeletEvents {
    /// How many distinct notes keep their series; past that the memory starts over.
    pub const NOTES: usize = 64;

    /// A recorder reporting as `kubelet` through `client`.
    #[must_use]
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            by_note: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn recorder_for(&self, note: &str) -> Recorder {
        let mut by_note = self.by_note.lock().await;
        if by_note.len() >= Self::NOTES && !by_note.contains_key(note) {
            by_note.clear();
        }
        by_note
            .entry(note.to_string())
            .or_insert_with(|| {
                Recorder::new(
                    self.client.clone(),
                    Reporter {
                        controller: "kubelet".into(),
                        instance: Some("dynamo-conformance-agent".into()),
                    },
                )
            })
            .clone()
    }
}

/// Records a kubelet `Warning` about `container` of `pod` (`reason` in the kubelet's words:
/// `Failed`, `BackOff`, `Unhealthy`); a failure to record is printed, not returned.
pub async fn warn(
    events: &KubeletEvents,
    pod: &Pod,
    container: &str,
    reason: &str,
    note: String,
    action: &str,
) {
    record(
        events,
        pod,
        container,
        EventType::Warning,
        reason,
        note,
        action,
    )
    .await;
}

/// Records a kubelet event of `type_` about `container` of `pod` (`Killing` is `Normal`); a
/// failure to record is printed, not returned.
pub async fn record(
    events: &KubeletEvents,
    pod: &Pod,
    container: &str,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let mut reference = pod.object_ref(&());
    reference.field_path = Some(format!("spec.containers{{{container}}}"));
    let recorder = events.recorder_for(&note).await;
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        eprintln!(
            "kubelet: cannot record an event for pod {}: {e}",
            pod.name_any()
        );
    }
}

/// The operator image's entrypoint, run for real before the pod starts (its flags checked).
const MANAGER: &str = "/manager";

/// Starts each `/manager` container of `pod` (the operator's) as the stand-in manager with the
/// container's arguments and environment, flags only ([`FLAGS_ONLY_ENV`]): a flag its release's
/// operator does not define ends it with exit 2, as on a real kubelet, and the container
/// crash-loops with the process's words as its termination message.
async fn managers_exiting(pod: &Pod) -> Vec<Blocked> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in spec
        .containers
        .iter()
        .filter(|c| c.command.as_deref() == Some(&[MANAGER.to_string()][..]))
    {
        let started_at = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut run = tokio::process::Command::new(&exe);
        run.arg0("manager")
            .args(c.args.iter().flatten())
            .env_clear()
            .envs(
                c.env
                    .iter()
                    .flatten()
                    .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
            )
            .env(FLAGS_ONLY_ENV, "1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let Ok(Ok(ended)) = tokio::time::timeout(Duration::from_secs(30), run.output()).await
        else {
            continue;
        };
        if ended.status.success() {
            continue;
        }
        let mut said = String::from_utf8_lossy(&ended.stdout).into_owned();
        said.push_str(&String::from_utf8_lossy(&ended.stderr));
        out.push(Blocked {
            container: c.name.clone(),
            reason: "CrashLoopBackOff",
            message: format!(
                "back-off {:?} restarting failed container={} pod={}_{}({})",
                RECHECK,
                c.name,
                pod.name_any(),
                pod.namespace().unwrap_or_default(),
                pod.uid().unwrap_or_default()
            ),
            image: c.image.clone().unwrap_or_default(),
            terminated: Some(Termination {
                exit_code: ended.status.code().unwrap_or(-1),
                message: said.trim().to_string(),
                started_at,
                finished_at: k8s_openapi::jiff::Timestamp::now().to_string(),
            }),
        });
    }
    out
}

/// Checks one pod and lets kwok start it or records why it waits.
async fn create(
    client: &Client,
    recorder: &KubeletEvents,
    bridge_dir: &Path,
    pod: &Pod,
    retry: bool,
) -> Result<bool, kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let secrets = keys::<Secret>(client, &namespace).await?;
    let config_maps = keys::<ConfigMap>(client, &namespace).await?;
    let mut blocked = check(pod, &withdrawn(bridge_dir), &secrets, &config_maps, retry);
    if blocked.is_empty() {
        blocked.extend(managers_exiting(pod).await);
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let annotate =
        |value: &str| json!({ "metadata": { "annotations": { CONTAINERS_ANNOTATION: value } } });
    if blocked.is_empty() {
        api.patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(annotate(CREATED)),
        )
        .await?;
        return Ok(true);
    }
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(waiting_status(pod, &blocked)),
    )
    .await?;
    api.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(annotate(WAITING)),
    )
    .await?;
    for b in &blocked {
        let (reason, note, action) = match b.reason {
            "ErrImagePull" => (
                "Failed",
                format!(
                    "Failed to pull image \"{}\": rpc error: code = NotFound desc = {}",
                    b.image, b.message
                ),
                "Pulling",
            ),
            "ImagePullBackOff" => ("BackOff", b.message.clone(), "Pulling"),
            "CrashLoopBackOff" => (
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    b.container,
                    pod.name_any(),
                    namespace,
                    pod.uid().unwrap_or_default()
                ),
                "Restarting",
            ),
            _ => ("Failed", format!("Error: {}", b.message), "Creating"),
        };
        warn(recorder, pod, &b.container, reason, note, action).await;
    }
    Ok(false)
}

/// Runs the kubelet's pre-start steps for every pod on kwok's nodes, for as long as it is polled.
pub async fn run(client: Client, bridge_dir: PathBuf) {
    let recorder = KubeletEvents::new(&client);
    let (store, writer) = reflector::store();
    let (changed, mut on_change) = watch::channel(());
    let events = reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| {
        let _ = changed.send(());
        async {}
    });
    // When each waiting pod was last tried, by uid.
    let mut tried: HashMap<String, Instant> = HashMap::new();
    let checking = async {
        let _ = store.wait_until_ready().await;
        loop {
            let pods: Vec<_> = store.state().into_iter().filter(|p| to_create(p)).collect();
            tried.retain(|uid, _| pods.iter().any(|p| p.uid().as_deref() == Some(uid)));
            for pod in pods {
                let uid = pod.uid().unwrap_or_default();
                let retry = match tried.get(&uid) {
                    Some(at) if at.elapsed() < RECHECK => continue,
                    Some(_) => true,
                    None => false,
                };
                match create(&client, &recorder, &bridge_dir, &pod, retry).await {
                    Ok(true) => {
                        tried.remove(&uid);
                    }
                    Ok(false) => {
                        tried.insert(uid, Instant::now());
                    }
                    Err(e) => eprintln!("kubelet: pod {}: {e}", pod.name_any()),
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), on_change.changed()).await;
        }
    };
    tokio::select! {
        _ = events => {}
        _ = checking => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(image: &str, env: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "ns" },
            "spec": { "containers": [
                { "name": "main", "image": image, "envFrom": env["envFrom"], "env": env["env"] },
                { "name": "proxy", "image": "quay.io/brancz/kube-rbac-proxy:v0.15.0" },
            ] },
        }))
        .expect("a pod")
    }

    fn keys(pairs: &[(&str, &str)]) -> Keys {
        let mut k = Keys::new();
        for (name, key) in pairs {
            k.entry(name.to_string())
                .or_default()
                .insert(key.to_string());
        }
        k
    }

    fn reasons(blocked: &[Blocked]) -> Vec<(&str, &str, &str)> {
        blocked
            .iter()
            .map(|b| (b.container.as_str(), b.reason, b.message.as_str()))
            .collect()
    }

    #[test]
    fn a_withdrawn_image_fails_to_pull_then_backs_off_and_only_its_container_waits() {
        let withdrawn: BTreeSet<String> = ["bitnami/etcd:3.5.18-debian-12-r5".to_string()].into();
        let p = pod("docker.io/bitnami/etcd:3.5.18-debian-12-r5", json!({}));
        let first = check(&p, &withdrawn, &Keys::new(), &Keys::new(), false);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].container.as_str(), first[0].reason),
            ("main", "ErrImagePull")
        );
        let again = check(&p, &withdrawn, &Keys::new(), &Keys::new(), true);
        assert_eq!(again[0].reason, "ImagePullBackOff");
        assert!(
            again[0]
                .message
                .starts_with("Back-off pulling image \"docker.io/bitnami/etcd")
        );
        let status = waiting_status(&p, &again);
        assert_eq!(
            status["status"]["phase"], "Running",
            "the other container runs: 1/2"
        );
        assert_eq!(
            status["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
        assert_eq!(status["status"]["containerStatuses"][1]["ready"], true);
        assert!(
            check(
                &pod("bitnami/etcd:3.6", json!({})),
                &withdrawn,
                &Keys::new(),
                &Keys::new(),
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn a_crashed_container_waits_in_crash_loop_back_off_with_its_last_termination() {
        let p = pod("x", json!({}));
        let container = &p.spec.as_ref().unwrap().containers[0];
        let ended = Termination {
            exit_code: 1,
            message: "ERROR Failed to connect to NATS".into(),
            started_at: "2026-12-01T06:00:00Z".into(),
            finished_at: "2026-12-01T06:00:05Z".into(),
        };
        let (status, annotations) = crash_loop(&p, container, 2, Duration::from_secs(20), &ended);
        let main = &status["status"]["containerStatuses"][0];
        assert_eq!(main["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert!(
            main["state"]["waiting"]["message"]
                .as_str()
                .unwrap()
                .starts_with("back-off 20s restarting failed container=main pod=p_ns")
        );
        assert_eq!(main["restartCount"], 2);
        assert_eq!(main["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(
            main["lastState"]["terminated"]["message"],
            "ERROR Failed to connect to NATS"
        );
        let carried: serde_json::Value = serde_json::from_str(
            annotations["metadata"]["annotations"][LAST_STATE_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            carried, main["lastState"],
            "kwok's stages carry the same lastState"
        );
    }

    #[test]
    fn a_missing_secret_config_map_or_key_fails_container_config_unless_optional() {
        let env_from = json!({ "envFrom": [{ "secretRef": { "name": "hf-token-secret" } }] });
        let none = BTreeSet::new();
        assert_eq!(
            reasons(&check(
                &pod("x", env_from.clone()),
                &none,
                &Keys::new(),
                &Keys::new(),
                false
            )),
            [(
                "main",
                "CreateContainerConfigError",
                "secret \"hf-token-secret\" not found"
            )]
        );
        let secrets = keys(&[("hf-token-secret", "HF_TOKEN")]);
        assert!(check(&pod("x", env_from), &none, &secrets, &Keys::new(), false).is_empty());
        let key_ref = json!({ "env": [{ "name": "T", "valueFrom": { "secretKeyRef": { "name": "hf-token-secret", "key": "TOKEN" } } }] });
        assert_eq!(
            reasons(&check(
                &pod("x", key_ref),
                &none,
                &secrets,
                &Keys::new(),
                false
            )),
            [(
                "main",
                "CreateContainerConfigError",
                "couldn't find key TOKEN in Secret ns/hf-token-secret"
            )]
        );
        let optional =
            json!({ "envFrom": [{ "configMapRef": { "name": "absent", "optional": true } }] });
        assert!(check(&pod("x", optional), &none, &secrets, &Keys::new(), false).is_empty());
        let config_map = json!({ "envFrom": [{ "configMapRef": { "name": "absent" } }] });
        assert_eq!(
            reasons(&check(
                &pod("x", config_map),
                &none,
                &secrets,
                &Keys::new(),
                false
            )),
            [(
                "main",
                "CreateContainerConfigError",
                "configmap \"absent\" not found"
            )]
        );
    }
}
