//! The runs on this machine: which are under way, and what each created, recorded as it creates it.
//!
//! A suite process (`run`, or one case under nextest) holds [`Activity`] from before it touches the
//! cluster until it exits; the lock goes with the process, however it ends (SIGKILL included).
//! What is kept between runs (the local cluster's graph) is parked only while [`idle`] holds.
//!
//! Each run has an id ([`Run`]): `$DYNAMO_CONFORMANCE_RUN_ID`, else nextest's `$NEXTEST_RUN_ID` (every
//! case process of one `cargo nextest run` is one run), else `<UTC time>-<pid>`. Its directory
//! `<cache>/runs/<id>/` holds a lock its processes share while they live and `ledger.jsonl`, one
//! [`Entry`] per object, Helm release or CRD the run created or used, appended as it happens. Objects
//! the run creates carry the label [`RUN_LABEL`]`=<id>`. A run that ends well on a provider whose
//! environment is reused (local, kind) hands what it created over to that environment
//! ([`Action::HandedOver`], label value [`ENVIRONMENT`]); `dynamo-conformance cleanup` removes what
//! runs that are no longer under way created and did not hand over ([`crate::cleanup`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dynamo::lock::FileLock;

/// The label naming the run that created an object, or [`ENVIRONMENT`].
pub const RUN_LABEL: &str = "dynamo-conformance/run";
/// The [`RUN_LABEL`] value of what a finished run handed over to the reused environment.
pub const ENVIRONMENT: &str = "environment";

/// How long a starting run waits for a park in progress to finish.
const PARK_WAIT: Duration = Duration::from_secs(120);

/// Errors taking the activity lock.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The lock file could not be used, or a park held it too long.
    #[error("the runs' activity lock: {0}")]
    Lock(#[from] crate::dynamo::DynamoError),
    /// The ledger file could not be written or read.
    #[error("the run ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a run did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// It did not exist; the run made it.
    Created,
    /// The run applied to it or relied on it (written before it applies, so a cleanup beside
    /// the run leaves it).
    Used,
    /// The run ended well and left what it created to the reused environment (no object named).
    HandedOver,
    /// The run itself ended it (a process that exited, a port-forward it closed).
    Ended,
}

/// The ledger's `api_version` of what lives on this machine, not in the cluster.
pub const HOST: &str = "host";
/// The ledger's `kind` of a process the run started.
pub const PROCESS: &str = "Process";
/// The ledger's `kind` of a port-forward the run opened.
pub const PORT_FORWARD: &str = "PortForward";

/// The ledger's `kind` of a file or directory the run wrote (its report, an evidence bundle).
pub const FILE: &str = "File";

/// Records a file or directory of the run's report: kept by `cleanup`, which names it.
pub fn record_file(path: &std::path::Path) {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    record(Entry::now(
        Action::Created,
        "report",
        HOST,
        FILE,
        None,
        &path.display().to_string(),
    ));
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22): with the
/// pid, it tells the process from a later one that reuses its pid. `None` once it is gone.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Records a process this run started (`Created`, or `Ended` once it exited): its name is
/// `<pid>@<start ticks> <program>`, as [`process_of`] reads it back.
pub fn record_process(action: Action, stage: &str, pid: u32, start: u64, program: &str) {
    record(Entry::now(
        action,
        stage,
        HOST,
        PROCESS,
        None,
        &format!("{pid}@{start} {program}"),
    ));
}

/// Records [`Action::Ended`] for each port-forward this process opened and has not closed: they
/// end with it. Called as a run's process finishes.
pub fn end_forwards_of_this_process() {
    let Some(run) = current() else {
        return;
    };
    let mine = format!("(pid {})", std::process::id());
    let entries = run.entries();
    for e in entries.iter().filter(|e| {
        e.kind == PORT_FORWARD && e.action == Action::Created && e.name.ends_with(&mine)
    }) {
        let closed = entries.iter().any(|l| {
            l.action == Action::Ended
                && l.kind == e.kind
                && l.namespace == e.namespace
                && l.name == e.name
        });
        if !closed {
            record(Entry::now(
                Action::Ended,
                &e.stage,
                HOST,
                PORT_FORWARD,
                e.namespace.as_deref(),
                &e.name,
            ));
        }
    }
}

/// The pid and start ticks of a [`PROCESS`] entry's name.
pub fn process_of(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.split_whitespace().next()?.split_once('@')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// One line of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// What the run did.
    pub action: Action,
    /// The stage that did it (`storage`, `platform`, `graph`, …).
    pub stage: String,
    /// `apiVersion` of an object; `helm` for a Helm release.
    pub api_version: String,
    /// Its kind; `HelmRelease` for a Helm release.
    pub kind: String,
    /// Its namespace, for namespaced objects and releases.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl Entry {
    /// An entry stamped now.
    pub fn now(
        action: Action,
        stage: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Entry {
        Entry {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            action,
            stage: stage.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(Into::into),
            name: name.into(),
        }
    }

    /// `kind namespace/name` (or `kind name`).
    pub fn object(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// A run of this process: its id, ledger and the lock saying it is under way.
#[derive(Debug)]
pub struct Run {
    /// The run's id.
    pub id: String,
    dir: PathBuf,
    _lock: FileLock,
}

/// `<cache>/runs/`.
pub fn runs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("runs")
}

/// The id this process's run takes (see the module's documentation).
pub fn run_id() -> String {
    let from_env = |key| {
        std::env::var(key)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    from_env("DYNAMO_CONFORMANCE_RUN_ID")
        .or_else(|| from_env("NEXTEST_RUN_ID"))
        .map(|id| {
            id.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(63)
                .collect()
        })
        .unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{secs}-{}", std::process::id())
        })
}

impl Run {
    /// Starts (or joins, for another process of the same nextest run) the run `id`.
    ///
    /// # Errors
    /// [`LedgerError::Lock`] when the run's lock file cannot be used.
    pub fn start(cache_dir: &Path, id: &str) -> Result<Run, LedgerError> {
        let dir = runs_dir(cache_dir).join(id);
        Ok(Run {
            id: id.to_string(),
            _lock: FileLock::shared(&dir.join("lock"), Duration::from_secs(5))?,
            dir,
        })
    }

    /// Appends `entry` to the ledger.
    ///
    /// # Errors
    /// [`LedgerError::Io`] when the ledger cannot be written.
    pub fn record(&self, entry: &Entry) -> Result<(), LedgerError> {
        let path = self.dir.join("ledger.jsonl");
        let line = serde_json::to_string(entry).expect("an entry serializes") + "\n";
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|source| LedgerError::Io { path, source })
    }
}

static CURRENT: OnceLock<Run> = OnceLock::new();

/// Starts this process's run once; later calls return it.
///
/// # Errors
/// [`LedgerError::Lock`] when the run's lock file cannot be used.
pub fn begin(cache_dir: &Path) -> Result<&'static Run, LedgerError> {
    if let Some(run) = CURRENT.get() {
        return Ok(run);
    }
    let run = Run::start(cache_dir, &run_id())?;
    Ok(CURRENT.get_or_init(|| run))
}

/// This process's run, if it began one.
pub fn current() -> Option<&'static Run> {
    CURRENT.get()
}

/// Records `entry` in this process's run's ledger, if it began one; a ledger that cannot be
/// written is said on stderr (the run goes on).
pub fn record(entry: Entry) {
    if let Some(run) = current()
        && let Err(e) = run.record(&entry)
    {
        eprintln!("dynamo-conformance: {e}");
    }
}

/// The [`RUN_LABEL`] value an object takes when applied: its creator's when it exists (`meta` of
/// the existing object), else this process's run's; `None` without either.
pub fn creator(
    meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> Option<String> {
    match meta {
        Some(meta) => meta.labels.as_ref().and_then(|l| l.get(RUN_LABEL).cloned()),
        None => current().map(|r| r.id.clone()),
    }
}

/// Records an apply: [`Action::Used`] when the object `existed`, else [`Action::Created`].
pub fn record_apply(
    existed: bool,
    stage: &str,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) {
    let action = if existed {
        Action::Used
    } else {
        Action::Created
    };
    record(Entry::now(
        action,
        stage,
        api_version,
        kind,
        namespace,
        name,
    ));
}

impl Run {
    /// This run's ledger, as written so far.
    pub fn entries(&self) -> Vec<Entry> {
        std::fs::read_to_string(self.dir.join("ledger.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Hands what this process's run created or used in `stage` over to the reused environment
/// (providers whose stages stay applied between runs; an object a killed run created and this one
/// completed is the environment's too): each such object's [`RUN_LABEL`] becomes
/// [`ENVIRONMENT`] and the ledger says [`Action::HandedOver`]. Returns what could not be relabelled.
pub async fn hand_over(client: &kube::Client, stage: &str) -> Vec<String> {
    use kube::api::{Patch, PatchParams};
    let Some(run) = current() else {
        return Vec::new();
    };
    let mut failed = Vec::new();
    let discovery = kube::discovery::Discovery::new(client.clone()).run().await;
    for e in run
        .entries()
        .iter()
        .filter(|e| e.action != Action::HandedOver && e.stage == stage && e.api_version != "helm")
    {
        let Some(resolved) = discovery
            .as_ref()
            .ok()
            .and_then(|d| crate::k8s::resolve(d, &e.api_version, &e.kind))
        else {
            failed.push(format!("{}: its kind is not served", e.object()));
            continue;
        };
        let api = crate::k8s::dynamic_api(client, &resolved, e.namespace.as_deref());
        let patch = serde_json::json!({"metadata": {"labels": {RUN_LABEL: ENVIRONMENT}}});
        if let Err(err) = api
            .patch(&e.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            failed.push(format!("{}: {err}", e.object()));
        }
    }
    record(Entry::now(Action::HandedOver, stage, "", "", None, ""));
    failed
}

/// A run found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its id.
    pub id: String,
    /// Whether a process of it still lives.
    pub active: bool,
    /// Its ledger, in order.
    pub entries: Vec<Entry>,
}

/// Every run with a directory under `<cache>/runs/`, oldest id first.
///
/// # Errors
/// [`LedgerError::Io`] when a ledger cannot be read; [`LedgerError::Lock`] when a run's lock
/// cannot be tried.
pub fn recorded(cache_dir: &Path) -> Result<Vec<Recorded>, LedgerError> {
    let dir = runs_dir(cache_dir);
    let mut runs = Vec::new();
    let Ok(read) = std::fs::read_dir(&dir) else {
        return Ok(runs);
    };
    for entry in read.flatten().filter(|e| e.path().is_dir()) {
        let id = entry.file_name().to_string_lossy().into_owned();
        let active = FileLock::try_exclusive(&entry.path().join("lock"))?.is_none();
        let path = entry.path().join("ledger.jsonl");
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(LedgerError::Io { path, source }),
        };
        runs.push(Recorded {
            id,
            active,
            entries,
        });
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(runs)
}

/// Forgets a finished run's ledger.
pub fn forget(cache_dir: &Path, id: &str) {
    let _ = std::fs::remove_dir_all(runs_dir(cache_dir).join(id));
}

/// `<cache>/runs/active.lock`.
pub fn activity_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("runs").join("active.lock")
}

/// A run under way: held for the process's lifetime.
#[derive(Debug)]
#[must_use = "the run counts as under way only while this is held"]
pub struct Activity {
    _lock: FileLock,
}

impl Activity {
    /// Marks this process as a run under way, waiting at most two minutes for a park in
    /// progress to finish.
    ///
    /// # Errors
    /// [`LedgerError::Lock`] when the lock file cannot be used or the wait runs out.
    pub fn hold(cache_dir: &Path) -> Result<Activity, LedgerError> {
        Ok(Activity {
            _lock: FileLock::shared(&activity_path(cache_dir), PARK_WAIT)?,
        })
    }
}

/// The only lock on the activity file when no run is under way (hold it while parking, so that no
/// run starts meanwhile), else `None`.
///
/// # Errors
/// [`LedgerError::Lock`] when the lock file cannot be used.
pub fn idle(cache_dir: &Path) -> Result<Option<FileLock>, LedgerError> {
    Ok(FileLock::try_exclusive(&activity_path(cache_dir))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_lists_what_a_run_did_and_whether_it_is_under_way() {
        let cache = tempfile::tempdir().unwrap();
        let run = Run::start(cache.path(), "r1").unwrap();
        let entry = Entry::now(
            Action::Created,
            "graph",
            "nvidia.com/v1alpha1",
            "DynamoGraphDeployment",
            Some("ns"),
            "g",
        );
        run.record(&entry).unwrap();
        let runs = recorded(cache.path()).unwrap();
        assert_eq!(
            runs,
            [Recorded {
                id: "r1".into(),
                active: true,
                entries: vec![entry.clone()]
            }]
        );
        assert_eq!(entry.object(), "DynamoGraphDeployment ns/g");
        drop(run);
        assert!(
            !recorded(cache.path()).unwrap()[0].active,
            "its process is gone"
        );
        forget(cache.path(), "r1");
        assert!(recorded(cache.path()).unwrap().is_empty());
    }

    #[test]
    fn a_run_under_way_keeps_the_machine_from_idling_until_it_ends() {
        let cache = tempfile::tempdir().unwrap();
        assert!(idle(cache.path()).unwrap().is_some(), "no run yet");
        let first = Activity::hold(cache.path()).unwrap();
        let second = Activity::hold(cache.path()).unwrap();
        assert!(idle(cache.path()).unwrap().is_none());
        drop(first);
        assert!(idle(cache.path()).unwrap().is_none(), "one run is left");
        drop(second);
        assert!(idle(cache.path()).unwrap().is_some());
    }
}
