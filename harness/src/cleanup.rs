//! Removing what runs no longer under way created: from their ledgers, or from the run label when a ledger is gone.
//!
//! Only what a run *created* and did not hand over to the reused environment is removed
//! ([`crate::ledger`]); an object that a run still under way created or used is left, and said so.
//! Helm releases are uninstalled with Helm; the CRDs a run created are deleted explicitly, since
//! Helm keeps the CRDs of a chart's `crds/` directory. Each removal is awaited (watched, bounded by
//! [`WAIT`] in all), and what is still there at the end is listed with its finalizers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::discovery::Discovery;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};

use crate::config::{Config, ProviderKind};
use crate::ledger::{Action, ENVIRONMENT, Entry, RUN_LABEL, Recorded};

/// The ledger's `api_version` of a Helm release.
pub const HELM: &str = "helm";
/// The ledger's `kind` of a Helm release.
pub const HELM_RELEASE: &str = "HelmRelease";
/// How long all removals together may take to finish (namespaces and finalizers included).
pub const WAIT: Duration = Duration::from_secs(180);

/// The kinds searched for the run label when a ledger is gone: `(apiVersion, kind)`.
const LABELLED_KINDS: &[(&str, &str)] = &[
    ("nvidia.com/v1alpha1", "DynamoGraphDeployment"),
    ("v1", "Secret"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("v1", "Namespace"),
];

/// Errors of a cleanup.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The ledgers could not be read.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The run named is not on record.
    #[error("no run {0} on record (`dynamo-conformance cleanup --list` shows them)")]
    UnknownRun(String),
    /// The run named is still under way.
    #[error("run {0} is still under way (a process of it holds its lock); stop it first")]
    Active(String),
    /// The cluster's APIs could not be listed.
    #[error("cannot discover the cluster's APIs: {0}")]
    Discovery(kube::Error),
    /// The cluster could not be reached.
    #[error("cannot reach the cluster: {0}")]
    Cluster(String),
}

/// What a cleanup will remove and what it leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The runs whose ledgers are read.
    pub runs: Vec<String>,
    /// What to remove, in order: objects newest first, then Helm releases, then CRDs.
    pub remove: Vec<Entry>,
    /// What is left, and why.
    pub left: Vec<(Entry, String)>,
}

fn key(e: &Entry) -> (String, String, Option<String>, String) {
    (
        e.api_version.clone(),
        e.kind.clone(),
        e.namespace.clone(),
        e.name.clone(),
    )
}

/// Plans the removal of what `only` (or, with `None`, every run no longer under way) created and
/// did not hand over, leaving what a run under way created or used.
///
/// An object's newest creation on record decides whose it is: a run that created an object
/// another run had created and handed over before (after it was deleted in between) owns it.
///
/// # Errors
/// [`CleanupError::UnknownRun`] or [`CleanupError::Active`] for a named run not on record or
/// still under way.
pub fn plan(runs: &[Recorded], only: Option<&str>) -> Result<Plan, CleanupError> {
    if let Some(id) = only {
        match runs.iter().find(|r| r.id == id) {
            None => return Err(CleanupError::UnknownRun(id.into())),
            Some(r) if r.active => return Err(CleanupError::Active(id.into())),
            Some(_) => {}
        }
    }
    let mut in_use = std::collections::BTreeMap::new();
    for run in runs.iter().filter(|r| r.active) {
        for e in &run.entries {
            in_use.entry(key(e)).or_insert_with(|| run.id.clone());
        }
    }
    // Each object's newest creation by a finished run: (when, place in its ledger, run, entry).
    let mut newest = std::collections::BTreeMap::new();
    for run in runs.iter().filter(|r| !r.active) {
        for (i, e) in run.entries.iter().enumerate() {
            let ended = || {
                run.entries[i..]
                    .iter()
                    .any(|l| l.action == Action::Ended && key(l) == key(e))
            };
            if e.action != Action::Created || ended() {
                continue;
            }
            let candidate = ((e.at, i), run, e);
            newest
                .entry(key(e))
                .and_modify(|held: &mut ((u64, usize), &Recorded, &Entry)| {
                    if candidate.0 >= held.0 {
                        *held = candidate;
                    }
                })
                .or_insert(candidate);
        }
    }
    let mut owned: Vec<_> = newest
        .into_values()
        .filter(|(_, run, _)| only.is_none_or(|id| id == run.id))
        .collect();
    owned.sort_by_key(|o| std::cmp::Reverse(o.0));
    let mut plan = Plan {
        runs: runs
            .iter()
            .filter(|r| !r.active && only.is_none_or(|id| id == r.id))
            .map(|r| r.id.clone())
            .collect(),
        ..Plan::default()
    };
    for (_, run, e) in owned {
        let handed = run
            .entries
            .iter()
            .any(|h| h.action == Action::HandedOver && h.stage == e.stage);
        if e.kind == crate::ledger::FILE {
            plan.left
                .push((e.clone(), "the run's report: kept for reading".into()));
        } else if handed {
            plan.left
                .push((e.clone(), "handed over to the reused environment".into()));
        } else if let Some(user) = in_use.get(&key(e)) {
            plan.left
                .push((e.clone(), format!("used by run {user}, still under way")));
        } else {
            plan.remove.push(e.clone());
        }
    }
    // Objects first (newest first), then releases, then the CRDs Helm would keep.
    plan.remove.sort_by_key(phase);
    Ok(plan)
}

/// The order of removal: objects, Helm releases, CRDs, namespaces, and last the storage stage's
/// provisioner and its namespace. Each phase is gone before the next begins: a graph's finalizer
/// needs the operator its release runs, and the volumes of the claims the namespaces held need
/// the provisioner to reclaim them.
fn phase(e: &Entry) -> u8 {
    let storage = e.stage == crate::stages::Stage::Storage.name();
    match (e.api_version.as_str(), e.kind.as_str(), storage) {
        (HELM, _, _) => 1,
        (_, "CustomResourceDefinition", _) => 2,
        (_, "Namespace", false) => 3,
        (_, "Namespace", true) => STORAGE_PHASE + 1,
        (_, _, true) => STORAGE_PHASE,
        _ => 0,
    }
}

const STORAGE_PHASE: u8 = 4;

/// Waits (until `deadline`) until no PersistentVolume of a StorageClass the plan removes is left
/// for a claim of a namespace the cleanup deleted: the provisioner reclaims them (reclaim policy
/// `Delete`) while it still runs. One line for what is left.
async fn volumes_reclaimed(
    client: &Client,
    plan: &Plan,
    deadline: tokio::time::Instant,
    done: &mut Done,
) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let named = |kind: &str| -> BTreeSet<&str> {
        plan.remove
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.as_str())
            .collect()
    };
    let (classes, namespaces) = (named("StorageClass"), named("Namespace"));
    if classes.is_empty() {
        return;
    }
    let waiting = |pv: &PersistentVolume| {
        let spec = pv.spec.as_ref();
        spec.and_then(|s| s.storage_class_name.as_deref())
            .is_some_and(|c| classes.contains(c))
            && spec
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.namespace.as_deref())
                .is_some_and(|ns| namespaces.contains(ns))
    };
    let (reader, writer) = reflector::store::<PersistentVolume>();
    let stream = reflector(
        writer,
        watcher(Api::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut left = Vec::new();
    let watched = tokio::time::timeout_at(deadline, async {
        while let Some(event) = stream.next().await {
            if event.is_err() || reader.wait_until_ready().now_or_never().is_none() {
                continue;
            }
            left = reader
                .state()
                .iter()
                .filter(|pv| waiting(pv))
                .map(|pv| {
                    let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                    format!(
                        "PersistentVolume {} (claim {}/{})",
                        pv.name_any(),
                        claim.and_then(|c| c.namespace.clone()).unwrap_or_default(),
                        claim.and_then(|c| c.name.clone()).unwrap_or_default()
                    )
                })
                .collect();
            if left.is_empty() {
                return;
            }
        }
    })
    .await;
    if watched.is_err() {
        done.failed.extend(
            left.into_iter()
                .map(|pv| format!("{pv}: not reclaimed by the provisioner before it was removed")),
        );
    }
}

/// What a cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    /// One line per thing removed (or found already gone).
    pub removed: Vec<String>,
    /// One line per thing left on purpose at removal time, with why.
    pub left: Vec<String>,
    /// One line per thing that could not be removed, with why.
    pub failed: Vec<String>,
}

/// How to run Helm against the cluster.
#[derive(Debug, Clone)]
pub struct Helm {
    /// The binary.
    pub binary: PathBuf,
    /// The kubeconfig.
    pub kubeconfig: PathBuf,
    /// The context, if any.
    pub context: Option<String>,
}

/// Adds to `plan` what carries the run label of a run that is neither under way nor on record
/// (its ledger is gone), nor [`ENVIRONMENT`].
///
/// # Errors
/// [`CleanupError::Discovery`] when the cluster's APIs cannot be listed.
pub async fn add_labelled(
    client: &Client,
    runs: &[Recorded],
    plan: &mut Plan,
) -> Result<(), CleanupError> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(CleanupError::Discovery)?;
    let known: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let planned: BTreeSet<_> = plan.remove.iter().map(key).collect();
    for (api_version, kind) in LABELLED_KINDS {
        let Some(resolved) = crate::k8s::resolve(&discovery, api_version, kind) else {
            continue;
        };
        let api = crate::k8s::dynamic_api(client, &resolved, None);
        let Ok(list) = api
            .list(&ListParams::default().labels(&format!("{RUN_LABEL},{RUN_LABEL}!={ENVIRONMENT}")))
            .await
        else {
            continue;
        };
        for object in list.items {
            let run = object.labels().get(RUN_LABEL).cloned().unwrap_or_default();
            if known.contains(run.as_str()) {
                continue;
            }
            let entry = Entry {
                at: 0,
                action: Action::Created,
                stage: format!("run {run} (ledger gone; found by its label)"),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                namespace: object.namespace(),
                name: object.name_any(),
            };
            if !planned.contains(&key(&entry)) {
                plan.remove.insert(0, entry);
            }
        }
    }
    Ok(())
}

/// Removes what `plan` says, then waits (at most [`WAIT`]) until each removed object is gone.
///
/// # Errors
/// [`CleanupError::Discovery`] when the cluster's APIs cannot be listed.
pub async fn execute(
    client: &Client,
    helm: &Helm,
    plan: &Plan,
    cache_dir: &std::path::Path,
) -> Result<Done, CleanupError> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(CleanupError::Discovery)?;
    let mut done = Done::default();
    let mut deleted = Vec::new();
    // A run removing its own objects as it ends holds its own ledger's lock: not another user.
    let own = crate::ledger::current().map(|run| run.id.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut current_phase = None;
    for e in &plan.remove {
        if current_phase.is_some_and(|p| p != phase(e)) {
            settle(std::mem::take(&mut deleted), deadline, &mut done).await;
            if phase(e) == STORAGE_PHASE {
                volumes_reclaimed(client, plan, deadline, &mut done).await;
            }
        }
        current_phase = Some(phase(e));
        // A run that started since the plan was made may have begun to use it.
        if let Some(user) = crate::ledger::recorded(cache_dir)?
            .iter()
            .filter(|r| r.active && Some(&r.id) != own.as_ref())
            .find(|r| r.entries.iter().any(|u| key(u) == key(e)))
        {
            done.left.push(format!(
                "{} (a run that started meanwhile, {}, uses it)",
                e.object(),
                user.id
            ));
            continue;
        }
        if e.api_version == crate::ledger::HOST {
            done.removed.push(end_on_host(e));
            continue;
        }
        if e.api_version == HELM {
            let ns = e.namespace.clone().unwrap_or_default();
            let mut command = tokio::process::Command::new(&helm.binary);
            command.arg("--kubeconfig").arg(&helm.kubeconfig);
            if let Some(context) = &helm.context {
                command.args(["--kube-context", context]);
            }
            command.args([
                "uninstall",
                &e.name,
                "--namespace",
                &ns,
                "--wait",
                "--timeout",
                "2m",
            ]);
            match command.output().await {
                Ok(out) if out.status.success() => {
                    done.removed.push(format!("uninstalled {}", e.object()));
                }
                Ok(out) if String::from_utf8_lossy(&out.stderr).contains("not found") => {
                    done.removed
                        .push(format!("{} was already gone", e.object()));
                }
                Ok(out) => done.failed.push(format!(
                    "{}: helm uninstall: {}",
                    e.object(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => done.failed.push(format!(
                    "{}: cannot run {}: {err}",
                    e.object(),
                    helm.binary.display()
                )),
            }
            continue;
        }
        let Some(resolved) = crate::k8s::resolve(&discovery, &e.api_version, &e.kind) else {
            done.removed.push(format!(
                "{} was already gone (its kind is gone)",
                e.object()
            ));
            continue;
        };
        let api = crate::k8s::dynamic_api(client, &resolved, e.namespace.as_deref());
        let current = match api.get_opt(&e.name).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                done.removed
                    .push(format!("{} was already gone", e.object()));
                continue;
            }
            Err(err) => {
                done.failed
                    .push(format!("{}: cannot read it: {err}", e.object()));
                continue;
            }
        };
        if current.labels().get(RUN_LABEL).map(String::as_str) == Some(ENVIRONMENT) {
            plan_left(
                &mut done,
                e,
                "a later run completed it and handed it over to the environment",
            );
            continue;
        }
        match api.delete(&e.name, &DeleteParams::foreground()).await {
            Ok(_) => deleted.push((e, api, current.uid().unwrap_or_default())),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                done.removed
                    .push(format!("{} was already gone", e.object()));
            }
            Err(err) => done.failed.push(format!("{}: delete: {err}", e.object())),
        }
    }
    settle(deleted, deadline, &mut done).await;
    Ok(done)
}

/// Waits (until `deadline`) for each deleted object to be gone, saying which were and which not.
async fn settle(
    deleted: Vec<(&Entry, kube::Api<kube::api::DynamicObject>, String)>,
    deadline: tokio::time::Instant,
    done: &mut Done,
) {
    for (e, api, uid) in deleted {
        let gone = tokio::time::timeout_at(
            deadline,
            await_condition(api.clone(), &e.name, conditions::is_deleted(&uid)),
        )
        .await;
        match gone {
            Ok(Ok(_)) => done.removed.push(format!("deleted {}", e.object())),
            _ => {
                let still = api.get_opt(&e.name).await.ok().flatten();
                done.failed.push(format!(
                    "{}: still there after {} s{}",
                    e.object(),
                    WAIT.as_secs(),
                    still
                        .map(|o| format!(" (finalizers: {})", o.finalizers().join(", ")))
                        .unwrap_or_default()
                ));
            }
        }
    }
}

/// Stops a process a dead run left running (the same pid and start time only); a port-forward
/// ended with the run's process. One line saying which.
fn end_on_host(e: &Entry) -> String {
    if e.kind == crate::ledger::PROCESS
        && let Some((pid, start)) = crate::ledger::process_of(&e.name)
    {
        if crate::ledger::process_start(pid) != Some(start) {
            return format!("{} had already ended", e.object());
        }
        // SAFETY: a plain signal to the process the ledger names, its start time checked.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == 0;
        return if sent {
            format!("stopped {} (SIGTERM)", e.object())
        } else {
            format!("{}: could not be signalled", e.object())
        };
    }
    format!("{} ended with its run's process", e.object())
}

fn plan_left(done: &mut Done, e: &Entry, why: &str) {
    done.left.push(format!("{} ({why})", e.object()));
}

/// The configured provider's cluster as it stands, brought up by nothing: `None` when there is
/// no local or kind cluster. Helm is the one named by `--helm`, else the suite's build, else
/// `helm` on the PATH.
///
/// # Errors
/// [`CleanupError::Cluster`] when the cluster cannot be reached.
pub async fn reach(config: &Config) -> Result<Option<(Client, Helm)>, CleanupError> {
    let (kubeconfig, context) = match config.provider {
        ProviderKind::Local => match crate::cluster::local::status(&config.cache_dir) {
            Ok(Some(cluster)) => (cluster.kubeconfig, None),
            Ok(None) => return Ok(None),
            Err(e) => return Err(CleanupError::Cluster(e.to_string())),
        },
        ProviderKind::Kind => {
            let path = crate::cluster::kind::kubeconfig_path(&config.cache_dir);
            if !path.is_file() {
                return Ok(None);
            }
            (path, None)
        }
        ProviderKind::Existing => (
            crate::cluster::existing::kubeconfig_path(config),
            config.context.clone(),
        ),
    };
    let (client, _) = crate::cluster::existing::connect(&kubeconfig, context.as_deref())
        .await
        .map_err(|e| CleanupError::Cluster(e.to_string()))?;
    let binary = config
        .helm
        .clone()
        .or_else(|| crate::helm::built(&config.cache_dir).map(|h| h.path))
        .unwrap_or_else(|| PathBuf::from("helm"));
    Ok(Some((
        client,
        Helm {
            binary,
            kubeconfig,
            context,
        },
    )))
}

/// Plans the removal of what this process's own run created and did not hand over, as if it had
/// ended (for an interrupted run, or `--keep` telling it to clean after itself).
///
/// # Errors
/// [`CleanupError::Ledger`] when the other runs' ledgers cannot be read.
pub fn plan_own(config: &Config) -> Result<Plan, CleanupError> {
    let Some(run) = crate::ledger::current() else {
        return Ok(Plan::default());
    };
    let mut runs: Vec<Recorded> = crate::ledger::recorded(&config.cache_dir)?
        .into_iter()
        .filter(|r| r.id != run.id)
        .collect();
    runs.push(Recorded {
        id: run.id.clone(),
        active: false,
        entries: run.entries(),
    });
    plan(&runs, Some(&run.id))
}

/// The lines a cleanup prints: what was removed, what was left and why, what failed.
pub fn describe(plan: &Plan, done: &Done) -> Vec<String> {
    let (files, objects): (Vec<_>, Vec<_>) = plan
        .left
        .iter()
        .partition(|(e, _)| e.kind == crate::ledger::FILE);
    let reports = (!files.is_empty()).then(|| {
        format!(
            "left: {} files of the runs' reports, kept for reading (the newest: {})",
            files.len(),
            files[0].0.name
        )
    });
    done.removed
        .iter()
        .map(|l| format!("removed: {l}"))
        .chain(
            objects
                .iter()
                .map(|(e, why)| format!("left: {} ({why})", e.object())),
        )
        .chain(reports)
        .chain(done.left.iter().map(|l| format!("left: {l}")))
        .chain(done.failed.iter().map(|l| format!("could not remove: {l}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: Action, stage: &str, kind: &str, name: &str) -> Entry {
        let api_version = if kind == HELM_RELEASE { HELM } else { "v1" };
        Entry {
            at: 0,
            action,
            stage: stage.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn run(id: &str, active: bool, entries: Vec<Entry>) -> Recorded {
        Recorded {
            id: id.into(),
            active,
            entries,
        }
    }

    #[test]
    fn what_the_run_ended_itself_is_not_planned_and_a_process_left_running_is_stopped_by_pid_and_start()
     {
        let host = |action, kind: &str, name: &str| Entry {
            api_version: crate::ledger::HOST.into(),
            namespace: None,
            ..entry(action, "command", kind, name)
        };
        let killed = run(
            "a",
            false,
            vec![
                host(Action::Created, crate::ledger::PROCESS, "10@5 go"),
                host(Action::Ended, crate::ledger::PROCESS, "10@5 go"),
                host(Action::Created, crate::ledger::PROCESS, "11@6 helm"),
                host(
                    Action::Created,
                    crate::ledger::PORT_FORWARD,
                    "f:8000 via 127.0.0.1:4000 (pid 9)",
                ),
                host(Action::Created, crate::ledger::FILE, "/r/report.json"),
            ],
        );
        let plan = plan(&[killed], None).unwrap();
        assert_eq!(plan.left.len(), 1, "the report is kept: {:?}", plan.left);
        assert_eq!(plan.left[0].1, "the run's report: kept for reading");
        let removed: Vec<String> = plan.remove.iter().map(|e| e.name.clone()).collect();
        assert_eq!(removed, ["f:8000 via 127.0.0.1:4000 (pid 9)", "11@6 helm"]);
        assert_eq!(crate::ledger::process_of("11@6 helm"), Some((11, 6)));
        // This test's own process, by its pid and start: alive; a wrong start time is another process.
        let me = std::process::id();
        let start = crate::ledger::process_start(me).expect("this process's start");
        assert_eq!(
            end_on_host(&host(
                Action::Created,
                crate::ledger::PROCESS,
                &format!("{me}@{} x", start + 1)
            )),
            format!("Process {me}@{} x had already ended", start + 1)
        );
        assert!(
            end_on_host(&host(
                Action::Created,
                crate::ledger::PORT_FORWARD,
                "f:8000 via 127.0.0.1:4000 (pid 9)"
            ))
            .ends_with("ended with its run's process")
        );
    }

    #[test]
    fn the_provisioner_goes_last_so_that_it_reclaims_the_volumes_of_the_deleted_namespaces() {
        let mut entries = vec![
            entry(
                Action::Created,
                "storage",
                "Namespace",
                "local-path-storage",
            ),
            entry(Action::Created, "storage", "StorageClass", "local-path"),
            entry(
                Action::Created,
                "storage",
                "Deployment",
                "local-path-provisioner",
            ),
            entry(Action::Created, "crds", HELM_RELEASE, "dynamo-crds"),
            entry(Action::Created, "platform", "Namespace", "dynamo-cloud"),
            entry(Action::Created, "platform", HELM_RELEASE, "dynamo-platform"),
            entry(Action::Created, "secret", "Secret", "hf-token-secret"),
            entry(Action::Created, "graph", "DynamoGraphDeployment", "g"),
        ];
        for (i, e) in entries.iter_mut().enumerate() {
            e.at = i as u64;
        }
        let plan = plan(&[run("a", false, entries)], None).unwrap();
        let removed: Vec<&str> = plan.remove.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            removed,
            [
                "g",
                "hf-token-secret",
                "dynamo-platform",
                "dynamo-crds",
                "dynamo-cloud",
                "local-path-provisioner",
                "local-path",
                "local-path-storage"
            ]
        );
    }

    #[test]
    fn a_dead_runs_own_objects_go_and_what_others_use_or_the_environment_owns_stays() {
        let killed = run(
            "a",
            false,
            vec![
                entry(Action::Created, "platform", HELM_RELEASE, "dynamo-platform"),
                entry(Action::HandedOver, "platform", "", ""),
                entry(Action::Created, "secret", "Secret", "hf-token-secret"),
                entry(Action::Created, "graph", "DynamoGraphDeployment", "g"),
                entry(Action::Created, "graph", "ConfigMap", "extra"),
            ],
        );
        let concurrent = run(
            "b",
            true,
            vec![
                entry(Action::Used, "graph", "DynamoGraphDeployment", "g"),
                entry(Action::Created, "graph", "ConfigMap", "own"),
            ],
        );
        let runs = [killed, concurrent];
        let plan = plan(&runs, None).unwrap();
        assert_eq!(plan.runs, ["a"], "a run under way is not cleaned");
        let removed: Vec<String> = plan.remove.iter().map(Entry::object).collect();
        assert_eq!(removed, ["ConfigMap ns/extra", "Secret ns/hf-token-secret"]);
        let left: Vec<(String, &str)> = plan
            .left
            .iter()
            .map(|(e, why)| (e.object(), why.as_str()))
            .collect();
        assert_eq!(
            left,
            [
                (
                    "DynamoGraphDeployment ns/g".to_string(),
                    "used by run b, still under way"
                ),
                (
                    "HelmRelease ns/dynamo-platform".to_string(),
                    "handed over to the reused environment"
                ),
            ]
        );
        assert!(matches!(
            super::plan(&runs, Some("b")),
            Err(CleanupError::Active(id)) if id == "b"
        ));
        assert!(matches!(
            super::plan(&runs, Some("zz")),
            Err(CleanupError::UnknownRun(_))
        ));
    }

    #[test]
    fn the_newest_creation_decides_whose_an_object_is_whatever_the_run_ids_sort_to() {
        let at = |mut e: Entry, at| {
            e.at = at;
            e
        };
        let graph = || entry(Action::Created, "graph", "DynamoGraphDeployment", "g");
        // Our CI at stop 16: a finished nextest run (its id sorting first) created the graph
        // and handed it over; the graph was deleted; a killed run created it anew.
        let handed_then_killed = [
            run(
                "9f43",
                false,
                vec![
                    at(graph(), 10),
                    at(entry(Action::HandedOver, "graph", "", ""), 11),
                ],
            ),
            run("fault-killed", false, vec![at(graph(), 20)]),
        ];
        for runs in [handed_then_killed.clone(), {
            let mut r = handed_then_killed.clone();
            r.reverse();
            r
        }] {
            let plan = plan(&runs, None).unwrap();
            let removed: Vec<String> = plan.remove.iter().map(Entry::object).collect();
            assert_eq!(removed, ["DynamoGraphDeployment ns/g"]);
            assert!(plan.left.is_empty(), "{:?}", plan.left);
        }
        assert!(
            plan(&handed_then_killed, Some("9f43"))
                .unwrap()
                .remove
                .is_empty(),
            "the older run no longer owns it"
        );
        // The other way round: the killed run's graph was later created and handed over.
        let killed_then_handed = [
            run("a", false, vec![at(graph(), 10)]),
            run(
                "b",
                false,
                vec![
                    at(graph(), 20),
                    at(entry(Action::HandedOver, "graph", "", ""), 21),
                ],
            ),
        ];
        let plan = plan(&killed_then_handed, None).unwrap();
        assert!(plan.remove.is_empty(), "{:?}", plan.remove);
        assert_eq!(plan.left.len(), 1);
    }

    #[test]
    fn releases_come_after_objects_and_crds_and_namespaces_last() {
        let mut crd = entry(Action::Created, "crds", "CustomResourceDefinition", "x");
        crd.namespace = None;
        let runs = [run(
            "a",
            false,
            vec![
                entry(Action::Created, "secret", "Namespace", "ns"),
                entry(Action::Created, "crds", HELM_RELEASE, "dynamo-crds"),
                crd,
                entry(Action::Created, "graph", "DynamoGraphDeployment", "g"),
            ],
        )];
        let order: Vec<String> = plan(&runs, Some("a"))
            .unwrap()
            .remove
            .iter()
            .map(|e| e.kind.clone())
            .collect();
        assert_eq!(
            order,
            [
                "DynamoGraphDeployment",
                HELM_RELEASE,
                "CustomResourceDefinition",
                "Namespace"
            ]
        );
    }
}
