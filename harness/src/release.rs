//! Every Dynamo release the suite installs and judges, one row of data each.
//!
//! A release asked for by version ([`DynamoVersion`]) is judged by its own row when it has one,
//! else by the newest row older than it (named in every report); a version older than the oldest
//! row, or not a version at all, is refused.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::profile::Profile;

/// A Dynamo release the suite has run here.
#[derive(Debug, PartialEq, Eq)]
pub struct Release {
    /// The version as PyPI and the image tags spell it, e.g. `0.4.1`.
    pub version: &'static str,
    /// The promises the release is judged by.
    pub profile: &'static Profile,
    /// Its pinned Python set, every package installed with `--no-deps`
    /// (`fixtures/local/dynamo/<version>/requirements.txt`, or `fixtures/kind/…` for an image-only
    /// release).
    pub requirements: &'static str,
    /// How its frontend and workers reach each other when the suite starts them outside a
    /// cluster's discovery (`dynamo up`, the local provider's pods).
    pub planes: Planes,
    /// Whether its processes must start in order: frontend, then decode worker, then prefill
    /// worker. 0.4.1's frontend misses a model registered before it watches, and two of its
    /// workers registering one model at once race on NATS's object store ("no stream found for
    /// given subject"), seen here.
    pub ordered_start: bool,
    /// The release of the guide's prefill image when a graph of this release is the guide's own:
    /// the guide pins `vllm-runtime:0.4.0` for the prefill worker beside 0.4.1.
    pub guide_prefill: Option<&'static str>,
    /// Whether a run may name it: `false` for a release only ever run as the guide's prefill image.
    pub runnable: bool,
    /// Whether its profile's facts were seen running this very release here; `false` while it is
    /// judged by an older release's profile, provisionally, until the matrix shows its own.
    pub profile_seen: bool,
    /// Whether its frontend asks the Hugging Face Hub's API (`/api/models/<model>/revision/main`)
    /// for every registered model, whatever `HF_HUB_OFFLINE` says: seen here with 0.8.1 and
    /// 0.9.1 (ModelExpress's Hugging Face provider; offline use of the Hub cache came with 1.0.2).
    /// Off a cluster such a release is served by a local Hub ([`crate::dynamo::hub`]).
    pub asks_the_hub: bool,
    /// The DynamoGraphDeployment versions its CRDs serve and store.
    pub graph_crd: GraphCrd,
}

/// Which DynamoGraphDeployment API versions a release's CRDs serve, and which one they store (the
/// one a graph of that release is written in). Read from the operator's CRDs, not run:
/// `v1beta1` (a `components` list) is served beside `v1alpha1` from 1.2 (ai-dynamo/dynamo#8647)
/// and is the storage version from 1.4 (#11904); `v1alpha1` stays served through 1.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphCrd {
    /// `v1alpha1` only: 0.4 to 1.1.
    V1alpha1,
    /// `v1alpha1` stored, `v1beta1` served too: 1.2 and 1.3.
    V1beta1Served,
    /// `v1beta1` stored, `v1alpha1` served too: from 1.4.
    V1beta1Stored,
}

impl GraphCrd {
    /// Whether `v1beta1` is served.
    pub fn serves_v1beta1(self) -> bool {
        self != GraphCrd::V1alpha1
    }

    /// The storage version, `v1alpha1` or `v1beta1`: the one the suite writes the graph in.
    pub fn stored(self) -> &'static str {
        match self {
            GraphCrd::V1beta1Stored => "v1beta1",
            _ => "v1alpha1",
        }
    }
}

/// How a release's processes find each other and exchange requests outside Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planes {
    /// etcd for discovery and NATS with JetStream for requests and events (`ETCD_ENDPOINTS`,
    /// `NATS_SERVER`): Dynamo 0.4.1 to 1.0.2 (seen here).
    EtcdAndNats,
    /// No etcd, no NATS: `--discovery-backend file` (its store in `DYN_FILE_KV`),
    /// `--request-plane tcp`, `--event-plane zmq`: Dynamo 1.1.1 to 1.6.1, seen here.
    FileTcpZmq,
}

impl Planes {
    /// The planes in a few words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Planes::EtcdAndNats => "etcd and NATS",
            Planes::FileTcpZmq => "file discovery, TCP requests and ZMQ events",
        }
    }
}

/// A row whose pinned set (`fixtures/local/dynamo/<version>/requirements.txt`), planes and start
/// order were seen running the release here, with its graph CRD versions (read, see [`GraphCrd`]),
/// judged by its line's `profile`: provisionally, or
/// (`seen`) as the matrix found the release keeping it; `asks_the_hub` when its frontend asks the
/// Hugging Face Hub's API.
macro_rules! row {
    ($version:literal, $profile:expr, $planes:expr, $crd:expr, ordered: $ordered:expr) => {
        Release {
            version: $version,
            profile: $profile,
            requirements: include_str!(concat!(
                "../../fixtures/local/dynamo/",
                $version,
                "/requirements.txt"
            )),
            planes: $planes,
            ordered_start: $ordered,
            guide_prefill: None,
            runnable: true,
            profile_seen: false,
            asks_the_hub: false,
            graph_crd: $crd,
        }
    };
    ($version:literal, $profile:expr, $planes:expr, $crd:expr, ordered: $ordered:expr, seen) => {
        Release {
            profile_seen: true,
            ..row!($version, $profile, $planes, $crd, ordered: $ordered)
        }
    };
    ($version:literal, $profile:expr, $planes:expr, $crd:expr, ordered: $ordered:expr, seen, asks_the_hub) => {
        Release {
            asks_the_hub: true,
            ..row!($version, $profile, $planes, $crd, ordered: $ordered, seen)
        }
    };
}

/// Every release, oldest first: the newest patch of each minor from the guide's 0.4 to 1.6.
///
/// 1.0.2 to 1.5.1 are `seen`: `matrix --releases all --tier api` (2026-12-01) found every 1.x
/// promise of the profile kept (`/v1/models` entries `"object": "model"`, usage only in a final
/// chunk when asked, flat JSON errors); what they break beyond it are faults (recorded for 1.0.2
/// in `findings.rs`, listed by the matrix for the others), not another profile. 0.5.1 to 0.9.1
/// are `seen` under profiles of their own (`0.5`, `0.6`, `0.9`), set from what the same matrix
/// saw them answer (0.8.1 and 0.9.1 on 2026-12-02, the Hub simulated); their faults (a stop sequence's broken stream, `n` ignored, 500 without `max_tokens`)
/// are listed by the matrix, not yet recorded as findings.
///
/// Each row's pinned set, planes and start order were seen running that release here
/// (2026-12-01: imports, `--help` of `dynamo.frontend` and `dynamo.mocker`; for 1.1.1 to 1.5.1 a
/// chat completion through file discovery, TCP and ZMQ; 0.5.1 to 1.0.2 need etcd and NATS, 1.0.2's
/// mocker NATS even with file discovery). A row whose `profile_seen` is `false` is judged by the
/// nearest release line's profile until `matrix` shows its own facts.
pub const RELEASES: &[Release] = &[
    Release {
        version: "0.4.0",
        profile: &Profile::V0_4,
        requirements: include_str!("../../fixtures/kind/dynamo/0.4.0/requirements.txt"),
        planes: Planes::EtcdAndNats,
        ordered_start: true,
        guide_prefill: None,
        runnable: false,
        profile_seen: false,
        asks_the_hub: false,
        graph_crd: GraphCrd::V1alpha1,
    },
    Release {
        version: "0.4.1",
        profile: &Profile::V0_4,
        requirements: include_str!("../../fixtures/local/dynamo/0.4.1/requirements.txt"),
        planes: Planes::EtcdAndNats,
        ordered_start: true,
        guide_prefill: Some("0.4.0"),
        runnable: true,
        profile_seen: true,
        asks_the_hub: false,
        graph_crd: GraphCrd::V1alpha1,
    },
    row!("0.5.1", &Profile::V0_5, Planes::EtcdAndNats, GraphCrd::V1alpha1, ordered: true, seen),
    row!("0.6.1", &Profile::V0_6, Planes::EtcdAndNats, GraphCrd::V1alpha1, ordered: true, seen),
    row!("0.7.1", &Profile::V0_6, Planes::EtcdAndNats, GraphCrd::V1alpha1, ordered: true, seen),
    row!("0.8.1", &Profile::V0_6, Planes::EtcdAndNats, GraphCrd::V1alpha1, ordered: true, seen, asks_the_hub),
    row!("0.9.1", &Profile::V0_9, Planes::EtcdAndNats, GraphCrd::V1alpha1, ordered: true, seen, asks_the_hub),
    row!("1.0.2", &Profile::V1, Planes::EtcdAndNats, GraphCrd::V1alpha1, ordered: true, seen),
    row!("1.1.1", &Profile::V1, Planes::FileTcpZmq, GraphCrd::V1alpha1, ordered: false, seen),
    row!("1.2.1", &Profile::V1, Planes::FileTcpZmq, GraphCrd::V1beta1Served, ordered: false, seen),
    row!("1.3.1", &Profile::V1, Planes::FileTcpZmq, GraphCrd::V1beta1Served, ordered: false, seen),
    row!("1.4.2", &Profile::V1, Planes::FileTcpZmq, GraphCrd::V1beta1Stored, ordered: false, seen),
    row!("1.5.1", &Profile::V1, Planes::FileTcpZmq, GraphCrd::V1beta1Stored, ordered: false, seen),
    Release {
        version: "1.6.1",
        profile: &Profile::V1,
        requirements: include_str!("../../fixtures/local/dynamo/1.6.1/requirements.txt"),
        planes: Planes::FileTcpZmq,
        ordered_start: false,
        guide_prefill: None,
        runnable: true,
        profile_seen: true,
        asks_the_hub: false,
        graph_crd: GraphCrd::V1beta1Stored,
    },
];

impl Release {
    /// The row of exactly `version`, if the table has one.
    pub fn of(version: &str) -> Option<&'static Release> {
        RELEASES.iter().find(|r| r.version == version)
    }
}

/// A PEP 440 release number as Dynamo's use it: `major.minor.micro`, optionally `.postN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// `major`, `minor`, `micro`.
    pub release: [u32; 3],
    /// `N` of `.postN` (PyPI's `1.3.0.post1`); a plain release sorts before its post releases.
    pub post: Option<u32>,
}

impl FromStr for Version {
    type Err = ReleaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReleaseError::NotAVersion(s.to_string());
        let text = s.trim().trim_start_matches('v');
        let (numbers, post) = match text.split_once(".post") {
            Some((numbers, n)) => (numbers, Some(n.parse().map_err(|_| bad())?)),
            None => (text, None),
        };
        let parts: Vec<u32> = numbers
            .split('.')
            .map(|p| {
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [major, minor, micro] => Ok(Version {
                release: [major, minor, micro],
                post,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [major, minor, micro] = self.release;
        write!(f, "{major}.{minor}.{micro}")?;
        match self.post {
            Some(n) => write!(f, ".post{n}"),
            None => Ok(()),
        }
    }
}

/// A Dynamo release to install and judge: the version asked for, and the row that judges it.
#[derive(Debug, Clone, Copy)]
pub struct DynamoVersion {
    version: Version,
    release: &'static Release,
}

impl DynamoVersion {
    /// The guide's release, 0.4.1: the default.
    pub fn guide() -> DynamoVersion {
        "0.4.1"
            .parse()
            .expect("the table holds the guide's release")
    }

    /// Every release a run may name, oldest first.
    pub fn all() -> impl Iterator<Item = DynamoVersion> {
        RELEASES
            .iter()
            .filter(|r| r.runnable)
            .map(|release| DynamoVersion {
                version: release.version.parse().expect("the table's versions parse"),
                release,
            })
    }

    /// The version as PyPI and the image tags spell it.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The row that judges it: its own, or the newest older one.
    pub fn release(&self) -> &'static Release {
        self.release
    }

    /// Whether the release is judged by a row of another release (say so wherever it is judged).
    pub fn borrows_profile(&self) -> bool {
        self.release.version != self.version.to_string()
    }

    /// The promises it is judged by.
    pub fn profile(&self) -> &'static Profile {
        self.release.profile
    }

    /// What judges it, for reports: `profile 0.4`, or for a release without a row of its own
    /// `profile 1.x, 1.6.1's (1.7.0 has no profile of its own)`.
    pub fn judged_by(&self) -> String {
        if self.borrows_profile() {
            format!(
                "profile {}, {}'s ({} has no profile of its own)",
                self.profile(),
                self.release.version,
                self.version
            )
        } else if !self.release.profile_seen {
            format!(
                "profile {}, provisional ({}'s own facts not yet established)",
                self.profile(),
                self.version
            )
        } else {
            format!("profile {}", self.profile())
        }
    }

    /// Whether this release's processes, or under version skew `workers`', ask the Hugging Face
    /// Hub's API ([`Release::asks_the_hub`]): a graph of them needs a Hub.
    pub fn asks_the_hub(&self, workers: Option<DynamoVersion>) -> bool {
        std::iter::once(*self)
            .chain(workers)
            .any(|v| v.release.asks_the_hub)
    }

    /// Whether workers of `workers` can serve beside this release's frontend here (version
    /// skew): both on the same planes ([`Release::planes`]; the suite starts one set of etcd and
    /// NATS, or none). Dynamo's own support policy is N-2 from about 1.4
    /// (ai-dynamo/dynamo#12800); breaks seen upstream include 1.4 frontends with 1.2 workers
    /// (#12657, fixed by #12658).
    ///
    /// # Errors
    /// [`ReleaseError::SkewAcrossPlanes`].
    pub fn same_planes(&self, workers: DynamoVersion) -> Result<(), ReleaseError> {
        if self.release.planes != workers.release.planes {
            return Err(ReleaseError::SkewAcrossPlanes {
                frontend: self.version.to_string(),
                frontend_planes: self.release.planes.describe(),
                workers: workers.version.to_string(),
                workers_planes: workers.release.planes.describe(),
            });
        }
        Ok(())
    }

    /// The guide's prefill image's release beside this one (0.4.1's guide pins 0.4.0); none for a
    /// release judged by another's row.
    pub fn guide_prefill(&self) -> Option<&'static str> {
        self.release
            .guide_prefill
            .filter(|_| !self.borrows_profile())
    }

    /// The runtime image tags a graph of this release needs: its own, then the guide's prefill
    /// image's.
    pub fn runtime_tags(&self) -> Vec<String> {
        std::iter::once(self.version.to_string())
            .chain(self.guide_prefill().map(String::from))
            .collect()
    }

    /// Its pinned Python set: its row's, or for a release judged by another's row that row's
    /// with `ai-dynamo` and `ai-dynamo-runtime` pinned to this release instead.
    pub fn requirements(&self) -> String {
        if !self.borrows_profile() {
            return self.release.requirements.to_string();
        }
        self.release
            .requirements
            .lines()
            .map(|line| {
                match ["ai-dynamo==", "ai-dynamo-runtime=="]
                    .iter()
                    .find(|pin| line.starts_with(*pin))
                {
                    Some(pin) => format!("{pin}{}", self.version),
                    None => line.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
}

impl PartialEq for DynamoVersion {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

impl Eq for DynamoVersion {}

impl std::hash::Hash for DynamoVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version.hash(state);
    }
}

impl PartialOrd for DynamoVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DynamoVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version.cmp(&other.version)
    }
}

impl fmt::Display for DynamoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.version.fmt(f)
    }
}

impl FromStr for DynamoVersion {
    type Err = ReleaseError;

    /// The row of exactly this version, else the newest runnable row older than it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let version: Version = s.parse()?;
        let rows = || {
            RELEASES.iter().filter(|r| r.runnable).map(|r| {
                (
                    r.version
                        .parse::<Version>()
                        .expect("the table's versions parse"),
                    r,
                )
            })
        };
        rows()
            .filter(|(v, _)| *v <= version)
            .max_by_key(|(v, _)| *v)
            .map(|(_, release)| DynamoVersion { version, release })
            .ok_or_else(|| ReleaseError::TooOld {
                asked: version.to_string(),
                oldest: rows()
                    .map(|(v, _)| v)
                    .min()
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            })
    }
}

/// Errors naming a release the suite cannot judge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    /// Not a release number (`0.4.1`, `1.3.0.post1`).
    #[error("'{0}' is not a Dynamo release number (expected e.g. 0.4.1 or 1.3.0.post1)")]
    NotAVersion(String),
    /// Older than every release the suite has run.
    #[error("Dynamo {asked} is older than {oldest}, the oldest release this suite judges")]
    TooOld {
        /// The version asked for.
        asked: String,
        /// The oldest runnable row.
        oldest: String,
    },
    /// A frontend and workers of releases on different planes.
    #[error(
        "Dynamo {workers}'s workers cannot serve beside Dynamo {frontend}'s frontend: {workers} runs on {workers_planes}, {frontend} on {frontend_planes}"
    )]
    SkewAcrossPlanes {
        /// The frontend's release.
        frontend: String,
        /// Its planes.
        frontend_planes: &'static str,
        /// The workers' release.
        workers: String,
        /// Their planes.
        workers_planes: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("0.4.1", "0.4.1", false)]
    #[case("v1.6.1", "1.6.1", false)]
    #[case(" 1.6.1 ", "1.6.1", false)]
    #[case("1.6.0", "1.5.1", true)]
    #[case("1.7.0", "1.6.1", true)]
    #[case("1.3.0.post1", "1.2.1", true)]
    #[case("0.8.1.post3", "0.8.1", true)]
    #[case("1.0.2", "1.0.2", false)]
    fn a_version_is_judged_by_its_row_or_the_newest_older_one(
        #[case] asked: &str,
        #[case] row: &str,
        #[case] borrowed: bool,
    ) {
        let version: DynamoVersion = asked.parse().unwrap();
        assert_eq!(version.release().version, row);
        assert_eq!(version.borrows_profile(), borrowed);
        assert_eq!(
            version.judged_by().contains("has no profile of its own"),
            borrowed
        );
        assert_eq!(version.to_string(), asked.trim().trim_start_matches('v'));
    }

    #[rstest]
    #[case("latest", "is not a Dynamo release number")]
    #[case("", "is not a Dynamo release number")]
    #[case("1.6", "is not a Dynamo release number")]
    #[case("1.6.1.2", "is not a Dynamo release number")]
    #[case("1.6.x", "is not a Dynamo release number")]
    #[case("1.6.1.post", "is not a Dynamo release number")]
    #[case("0.4.0", "older than 0.4.1, the oldest release this suite judges")]
    #[case("0.3.2", "older than 0.4.1")]
    fn versions_it_cannot_judge_are_refused_naming_why(#[case] asked: &str, #[case] says: &str) {
        let err = asked.parse::<DynamoVersion>().unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }

    #[test]
    fn post_releases_sort_after_their_release() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("1.3.0") < v("1.3.0.post1"));
        assert!(v("1.3.0.post1") < v("1.3.1"));
        assert!(v("0.9.1") < v("1.0.0"));
        assert!(v("0.10.0") > v("0.9.1"));
    }

    #[test]
    fn the_table_is_oldest_first_and_each_release_once() {
        let versions: Vec<Version> = RELEASES
            .iter()
            .map(|r| r.version.parse().unwrap())
            .collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        for release in RELEASES {
            assert!(
                release
                    .requirements
                    .contains(&format!("ai-dynamo=={}", release.version)),
                "{} pins another ai-dynamo",
                release.version
            );
        }
    }

    #[test]
    fn the_guides_release_needs_the_guides_prefill_image() {
        let tags = |v: &str| v.parse::<DynamoVersion>().unwrap().runtime_tags();
        assert_eq!(tags("0.4.1"), ["0.4.1", "0.4.0"]);
        assert_eq!(tags("1.6.1"), ["1.6.1"]);
        assert_eq!(tags("0.4.2"), ["0.4.2"]);
    }

    #[test]
    fn a_borrowed_row_installs_the_asked_release_with_the_rows_other_pins() {
        let asked: DynamoVersion = "1.7.0".parse().unwrap();
        let pins = asked.requirements();
        assert!(pins.contains("\nai-dynamo==1.7.0\n"), "{pins}");
        assert!(pins.contains("\nai-dynamo-runtime==1.7.0\n"), "{pins}");
        assert!(!pins.contains("==1.6.1"), "{pins}");
        assert!(pins.contains("pydantic=="), "{pins}");
    }
}
