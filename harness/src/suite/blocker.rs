//! Root causes: the case that first met a failure of the cluster, a stage or the graph's endpoints.
//!
//! Every later case that needs what failed is reported *blocked by* that case instead of failing
//! again with the same cause. Within one process (`run`) the record is in memory; under
//! `cargo nextest`, where each case is a process of its own, it is a file per failure under
//! `<cache>/blockers/<NEXTEST_RUN_ID>/`, and the first process to write it owns the failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stages::Stage;

/// What a case stands on before it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The provider's cluster, connected.
    Cluster,
    /// A step of the guide, applied and ready.
    Stage(Stage),
    /// The graph's frontend and workers, reached through port-forwards.
    Target,
}

impl Need {
    /// The name a blocker records, e.g. `cluster`, `stage platform`, `target`.
    pub fn name(self) -> String {
        match self {
            Need::Cluster => "cluster".into(),
            Need::Stage(stage) => format!("stage {}", stage.name()),
            Need::Target => "the graph's endpoints".into(),
        }
    }

    /// This need and everything under it, the deepest first: the cluster, then each stage's
    /// prerequisites in the guide's order.
    pub fn chain(self) -> Vec<Need> {
        fn stages(stage: Stage, out: &mut Vec<Need>) {
            for before in stage.prerequisites() {
                stages(*before, out);
            }
            if !out.contains(&Need::Stage(stage)) {
                out.push(Need::Stage(stage));
            }
        }
        let mut out = vec![Need::Cluster];
        match self {
            Need::Cluster => {}
            Need::Stage(stage) => stages(stage, &mut out),
            Need::Target => {
                stages(Stage::Graph, &mut out);
                out.push(Need::Target);
            }
        }
        out
    }

    fn file_name(self) -> String {
        self.name().replace(' ', "-").replace('\'', "") + ".json"
    }
}

/// A failure and the case that met it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    /// The case that failed with the cause, e.g. `guide::storage::provisioner_available`.
    pub case: String,
    /// What failed ([`Need::name`]).
    pub need: String,
    /// The failure, as that case reported it.
    pub cause: String,
}

impl std::fmt::Display for Blocker {
    /// One line, `blocked by <case> (<need> failed)`: the cause is that case's to report, once.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocked by {} ({} failed)", self.case, self.need)
    }
}

/// Why a case could not have what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// This case met the failure first: it fails with the cause.
    Failed(String),
    /// Another case met it first.
    Blocked(Blocker),
}

/// The run's record of failures.
#[derive(Debug)]
pub struct Blockers {
    seen: Mutex<BTreeMap<String, Blocker>>,
    /// Shared by the processes of one nextest run; `None` within one process.
    dir: Option<PathBuf>,
}

/// How long another run's record is kept before a new run removes it.
const KEEP: Duration = Duration::from_secs(24 * 3600);

impl Blockers {
    /// A record in memory only (one process: `run`).
    pub fn in_process() -> Blockers {
        Blockers {
            seen: Mutex::new(BTreeMap::new()),
            dir: None,
        }
    }

    /// A record shared through `dir` by the processes of one run; older runs' directories beside
    /// it are removed after a day.
    pub fn shared(dir: PathBuf) -> Blockers {
        if let Some(parent) = dir.parent() {
            prune(parent, &dir);
        }
        Blockers {
            seen: Mutex::new(BTreeMap::new()),
            dir: Some(dir),
        }
    }

    /// The first recorded failure of `need` or of anything under it ([`Need::chain`]).
    pub fn find(&self, need: Need) -> Option<Blocker> {
        need.chain().into_iter().find_map(|n| self.get(n))
    }

    fn get(&self, need: Need) -> Option<Blocker> {
        if let Some(b) = self.seen.lock().expect("blockers lock").get(&need.name()) {
            return Some(b.clone());
        }
        let text = std::fs::read(self.dir.as_ref()?.join(need.file_name())).ok()?;
        let blocker: Blocker = serde_json::from_slice(&text).ok()?;
        self.seen
            .lock()
            .expect("blockers lock")
            .insert(need.name(), blocker.clone());
        Some(blocker)
    }

    /// Records that `case` met `cause` on `need`, unless a case met it before: then this case
    /// is blocked by that one.
    pub fn fail(&self, case: &str, need: Need, cause: String) -> Unmet {
        let mine = Blocker {
            case: case.to_string(),
            need: need.name(),
            cause,
        };
        let standing = self.claim(need, mine.clone());
        if standing.case == mine.case {
            Unmet::Failed(mine.cause)
        } else {
            Unmet::Blocked(standing)
        }
    }

    fn claim(&self, need: Need, mine: Blocker) -> Blocker {
        if let Some(dir) = &self.dir {
            let path = dir.join(need.file_name());
            let text = serde_json::to_vec(&mine).expect("a blocker serializes");
            let created = std::fs::create_dir_all(dir).and_then(|()| {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                std::io::Write::write_all(&mut file, &text)
            });
            if created.is_err()
                && let Some(theirs) = self.get(need)
            {
                return theirs;
            }
        }
        self.seen
            .lock()
            .expect("blockers lock")
            .entry(need.name())
            .or_insert(mine)
            .clone()
    }
}

fn prune(parent: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP);
        if path != keep && old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

static BLOCKERS: OnceLock<Blockers> = OnceLock::new();

/// Chooses the process's record once: shared under `cache_dir` when `run_id` (nextest's
/// `NEXTEST_RUN_ID`) names a run of many processes, in memory otherwise.
pub fn init(cache_dir: &Path, run_id: Option<&str>) {
    BLOCKERS.get_or_init(|| match run_id {
        Some(id) if !id.is_empty() && !id.contains(['/', '\\', '.']) => {
            Blockers::shared(cache_dir.join("blockers").join(id))
        }
        _ => Blockers::in_process(),
    });
}

/// The process's record (in memory unless [`init`] chose otherwise).
pub fn blockers() -> &'static Blockers {
    BLOCKERS.get_or_init(Blockers::in_process)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_stands_on_the_cluster_and_every_stage_before_it() {
        let names = |need: Need| need.chain().into_iter().map(Need::name).collect::<Vec<_>>();
        assert_eq!(names(Need::Cluster), ["cluster"]);
        assert_eq!(
            names(Need::Stage(Stage::Platform)),
            ["cluster", "stage storage", "stage crds", "stage platform"]
        );
        assert_eq!(
            names(Need::Target),
            [
                "cluster",
                "stage storage",
                "stage crds",
                "stage platform",
                "stage secret",
                "stage graph",
                "the graph's endpoints"
            ]
        );
    }

    #[test]
    fn the_first_case_to_meet_a_failure_owns_it_and_the_rest_are_blocked() {
        let blockers = Blockers::in_process();
        assert_eq!(blockers.find(Need::Stage(Stage::Storage)), None);
        let first = blockers.fail(
            "guide::storage::provisioner_available",
            Need::Stage(Stage::Storage),
            "stage storage: cannot download the manifest\nmore".into(),
        );
        assert_eq!(
            first,
            Unmet::Failed("stage storage: cannot download the manifest\nmore".into())
        );
        // A case needing a later stage is blocked by the owner of the earliest failure.
        let later = blockers.find(Need::Target).expect("blocked");
        assert_eq!(later.case, "guide::storage::provisioner_available");
        assert_eq!(
            later.to_string(),
            "blocked by guide::storage::provisioner_available (stage storage failed)"
        );
        // A second case meeting the same failure itself is blocked, not failed again.
        let second = blockers.fail(
            "guide::graph::ready",
            Need::Stage(Stage::Storage),
            "stage storage: again".into(),
        );
        assert!(matches!(second, Unmet::Blocked(b) if b.case.ends_with("provisioner_available")));
        // An independent stage is not blocked.
        assert_eq!(blockers.find(Need::Stage(Stage::Crds)), None);
        assert_eq!(blockers.find(Need::Stage(Stage::Secret)), None);
    }

    #[test]
    fn processes_of_one_run_share_the_record_and_the_first_writer_owns_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run-1");
        let a = Blockers::shared(run.clone());
        let b = Blockers::shared(run.clone());
        let need = Need::Stage(Stage::Crds);
        assert!(matches!(
            a.fail("guide::crds::established", need, "helm failed".into()),
            Unmet::Failed(_)
        ));
        match b.fail(
            "guide::platform::operator_available",
            need,
            "helm failed".into(),
        ) {
            Unmet::Blocked(blocker) => assert_eq!(blocker.case, "guide::crds::established"),
            other => panic!("{other:?}"),
        }
        let c = Blockers::shared(run);
        assert_eq!(
            c.find(Need::Stage(Stage::Platform)).map(|b| b.case),
            Some("guide::crds::established".into())
        );
        // Another run sees nothing of it.
        let other = Blockers::shared(dir.path().join("run-2"));
        assert_eq!(other.find(Need::Stage(Stage::Platform)), None);
    }
}
