//! The bridge (local provider only): backs each simulated Dynamo pod with a real Dynamo process, reached through kwok.
//!
//! For every pod the operator's Deployments create (label `nvidia.com/dynamo-component-type`) and
//! kwok runs, the bridge starts the Dynamo process of the pod's own command, arguments and
//! environment, vLLM swapped for Dynamo's mocker; points kwok's PortForward and Logs for the pod at
//! that process and its log; runs the pod's readiness probe against it and marks the pod Ready or
//! not through an annotation kwok's stages read; restarts it with back-off when it exits; and stops
//! it when the pod goes. Processes end with the agent that runs the bridge.

pub mod crilog;
pub mod kubelet;
pub mod pod;
pub mod probe;
pub mod translate;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::dynamo::model::ModelDir;
use crate::dynamo::{hub, tools};
use crate::operator::component::TYPE_LABEL;
use translate::Role;

/// The field manager of the kwok objects the bridge writes.
pub const FIELD_MANAGER: &str = "dynamo-conformance-bridge";

/// Errors backing a pod with a process.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The pod cannot be backed as specified.
    #[error("pod {pod}: {reason}")]
    Pod {
        /// The pod.
        pod: String,
        /// Why.
        reason: String,
    },
    /// Installing or starting what the process needs failed.
    #[error("could not {what}: {detail}")]
    Setup {
        /// What was attempted.
        what: String,
        /// Why it failed.
        detail: String,
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

/// The real etcd and NATS that stand in for the platform's simulated pods (Dynamo 0.4.x).
#[derive(Debug, Clone)]
pub struct PlatformUrls {
    /// etcd's client URL.
    pub etcd_url: String,
    /// NATS's URL.
    pub nats_url: String,
}

struct PlatformProcesses {
    urls: PlatformUrls,
    _children: Vec<tokio::process::Child>,
}

/// What every pod's task shares.
pub struct Shared {
    /// The cluster.
    pub client: Client,
    /// The suite's cache (Python environments, models).
    pub cache_dir: PathBuf,
    /// The bridge's directory: pod logs, discovery files, platform data.
    pub dir: PathBuf,
    platform: tokio::sync::Mutex<Option<PlatformProcesses>>,
    /// The local Hugging Face Hub's URL and process, once a release that asks it runs.
    hub: tokio::sync::Mutex<Option<(String, tokio::process::Child)>>,
    ready: Mutex<HashSet<(String, Role)>>,
}

impl Shared {
    fn is_ready(&self, dyn_ns: &str, role: Role) -> bool {
        self.ready
            .lock()
            .expect("ready lock")
            .contains(&(dyn_ns.to_string(), role))
    }

    fn set_ready(&self, key: &(String, Role), ready: bool) {
        let mut set = self.ready.lock().expect("ready lock");
        if ready {
            set.insert(key.clone());
        } else {
            set.remove(key);
        }
    }

    /// The URL of the local Hugging Face Hub ([`crate::dynamo::hub`]), started once (again if
    /// it exited), for the pods of a release whose frontend asks the Hub (a real cluster's pods
    /// reach huggingface.co; this machine has no route to it). With `name`, waits until the Hub
    /// serves `model` as `name` (the worker mirrors it first: [`crate::dynamo::hub::mirror`]).
    async fn hub(&self, model: &ModelDir, name: Option<&str>) -> Result<String, BridgeError> {
        let dir = self.dir.join("hub");
        let url = {
            let mut slot = self.hub.lock().await;
            if let Some((_, child)) = slot.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                eprintln!(
                    "bridge: the local Hugging Face Hub exited ({status}), starting it again; its log: {}",
                    dir.join("olah.out").display()
                );
                *slot = None;
            }
            if slot.is_none() {
                let (cache, model_dir) = (self.cache_dir.clone(), model.clone());
                let hub = tokio::task::spawn_blocking(move || hub::ensure(&cache, &model_dir, &[]))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|detail| BridgeError::Setup {
                        what: "set up the local Hugging Face Hub".into(),
                        detail,
                    })?;
                let port =
                    crate::dynamo::deployment::free_port().map_err(|e| BridgeError::Setup {
                        what: "pick a port".into(),
                        detail: e.to_string(),
                    })?;
                let args = hub.command(&dir, port).map_err(|e| BridgeError::Setup {
                    what: "configure the local Hugging Face Hub".into(),
                    detail: e.to_string(),
                })?;
                let child = spawn_service(&hub.program, &args, &dir.join("olah.out"))?;
                *slot = Some((format!("http://127.0.0.1:{port}"), child));
            }
            slot.as_ref()
                .map(|(url, _)| url.clone())
                .unwrap_or_default()
        };
        if let Some(name) = name {
            let ready = hub::model_info_url(&url, name);
            await_healthy(
                &ready,
                &format!("serve the model as {name} from the local Hugging Face Hub"),
                &dir,
            )
            .await?;
        }
        Ok(url)
    }

    /// Starts the platform's etcd and NATS as local processes, once.
    async fn platform(&self) -> Result<PlatformUrls, BridgeError> {
        let mut slot = self.platform.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.urls.clone());
        }
        let setup = |what: &str| {
            let what = what.to_string();
            move |e: crate::dynamo::DynamoError| BridgeError::Setup {
                what,
                detail: e.to_string(),
            }
        };
        let cache = self.cache_dir.clone();
        let programs = tokio::task::spawn_blocking(move || tools::ensure(&cache))
            .await
            .map_err(|e| BridgeError::Setup {
                what: "install etcd and NATS".into(),
                detail: e.to_string(),
            })?
            .map_err(setup("install etcd and NATS"))?;
        let port = || crate::dynamo::deployment::free_port().map_err(setup("pick a port"));
        let (client, peer, nats, monitor) = (port()?, port()?, port()?, port()?);
        let data = self.dir.join("platform");
        let _ = std::fs::remove_dir_all(&data);
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd_args = tools::etcd_args(
            "platform",
            &data.join("etcd").display().to_string(),
            &etcd_url,
            &peer_url,
        );
        let nats_args = tools::nats_args(
            &nats.to_string(),
            &monitor.to_string(),
            &data.join("nats").display().to_string(),
        );
        std::fs::create_dir_all(&data).map_err(|e| BridgeError::Setup {
            what: format!("create {}", data.display()),
            detail: e.to_string(),
        })?;
        let children = vec![
            spawn_service(&programs.etcd, &etcd_args, &data.join("etcd.log"))?,
            spawn_service(&programs.nats, &nats_args, &data.join("nats.log"))?,
        ];
        for url in [
            format!("{etcd_url}/health"),
            format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"),
        ] {
            await_healthy(&url, "start the platform's etcd and NATS", &data).await?;
        }
        let urls = PlatformUrls {
            etcd_url,
            nats_url: format!("nats://127.0.0.1:{nats}"),
        };
        *slot = Some(PlatformProcesses {
            urls: urls.clone(),
            _children: children,
        });
        Ok(urls)
    }
}

/// Starts `program` with `args` for the agent's lifetime, its output in `log`.
fn spawn_service(
    program: &std::path::Path,
    args: &[String],
    log: &std::path::Path,
) -> Result<tokio::process::Child, BridgeError> {
    let setup = |what: String| {
        move |e: std::io::Error| BridgeError::Setup {
            what,
            detail: e.to_string(),
        }
    };
    let out = std::fs::File::create(log).map_err(setup(format!("create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(setup(format!("open {}", log.display())))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; the process ends with the agent's main thread.
    unsafe {
        command.as_std_mut().pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    use std::os::unix::process::CommandExt as _;
    command
        .spawn()
        .map_err(setup(format!("start {}", program.display())))
}

/// Waits up to [`SERVICE_START`] for `url` to answer 200; on timeout, `what` failed with the
/// last answer seen and where the logs are (`logs`).
async fn await_healthy(url: &str, what: &str, logs: &std::path::Path) -> Result<(), BridgeError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| BridgeError::Setup {
            what: what.into(),
            detail: e.to_string(),
        })?;
    let deadline = tokio::time::Instant::now() + SERVICE_START;
    loop {
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            seen if tokio::time::Instant::now() >= deadline => {
                return Err(BridgeError::Setup {
                    what: what.into(),
                    detail: format!(
                        "{url} not healthy within {SERVICE_START:?} (last: {}); logs in {}",
                        match seen {
                            Ok(r) => r.status().to_string(),
                            Err(e) => e.to_string(),
                        },
                        logs.display()
                    ),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// How long a platform process or the Hub may take to answer after it starts.
const SERVICE_START: Duration = Duration::from_secs(30);

/// Marks every Dynamo pod not ready, with `why` as its process status.
pub async fn mark_all_unready(client: &Client, why: &str) {
    let pods: Api<Pod> = Api::all(client.clone());
    let Ok(list) = pods
        .list(&kube::api::ListParams::default().labels(TYPE_LABEL))
        .await
    else {
        return;
    };
    let patch = serde_json::json!({ "metadata": { "annotations": {
        pod::READY_ANNOTATION: "false",
        pod::STATUS_ANNOTATION: why,
    } } });
    for p in list.items {
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
        let _ = api
            .patch(
                &p.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
    }
}

/// Whether the pod is on a node and not going away.
pub(crate) fn scheduled(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
}

/// Whether kwok has started the pod: it has an IP.
pub(crate) fn started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .is_some()
}

/// Whether kwok has started the pod and it is not going away.
fn runnable(pod: &Pod) -> bool {
    scheduled(pod) && started(pod)
}

/// Runs the bridge until `shutdown` turns true, then stops every process gracefully (SIGTERM, so
/// that each deregisters) before returning. `dir` holds pod logs, discovery files and the platform's data.
pub async fn run(
    client: Client,
    cache_dir: PathBuf,
    dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    // No process of an earlier bridge is alive: its 1.x file-discovery entries would be routed to.
    let _ = std::fs::remove_dir_all(dir.join("discovery"));
    let shared = Arc::new(Shared {
        client: client.clone(),
        cache_dir,
        dir,
        platform: tokio::sync::Mutex::new(None),
        hub: tokio::sync::Mutex::new(None),
        ready: Mutex::new(HashSet::new()),
    });
    let pods: Api<Pod> = Api::all(client);
    let (store, writer) = reflector::store();
    let events = reflector(
        writer,
        watcher(pods, watcher::Config::default().labels(TYPE_LABEL)),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| async {});
    let mut tasks = tokio::task::JoinSet::new();
    let mut running: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let serving = async {
        loop {
            let _ = store.wait_until_ready().await;
            let wanted: HashMap<String, Arc<Pod>> = store
                .state()
                .into_iter()
                .filter(|p| runnable(p))
                .filter_map(|p| Some((p.uid()?, p)))
                .collect();
            running.retain(|uid, stop| {
                let keep = wanted.contains_key(uid);
                if !keep {
                    let _ = stop.send(true);
                }
                keep
            });
            for (uid, pod) in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(uid) {
                    let (tx, rx) = watch::channel(false);
                    slot.insert(tx);
                    tasks.spawn(pod::serve(shared.clone(), (*pod).clone(), rx));
                }
            }
            while tasks.try_join_next().is_some() {}
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = events => {}
        _ = serving => {}
        _ = shutdown.changed() => {}
    }
    for stop in running.values() {
        let _ = stop.send(true);
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}
