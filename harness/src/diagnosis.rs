//! Known field failures, named: a catalog of symptoms matched against what a failed case saw.
//!
//! Each entry of [`CATALOG`] is data: the symptoms that identify it (any one suffices), its name, a
//! one-line hint and where it is reported upstream. A failed case's message ends with the entries
//! that match its [`Evidence`], or says that none did.

/// What a failed case saw: its own message (HTTP answers among it) and the namespace's pods,
/// events and log tails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The case's failure message.
    pub message: String,
    /// One entry per container of each pod.
    pub containers: Vec<ContainerState>,
    /// The namespace's events.
    pub events: Vec<EventSeen>,
    /// The last lines of each container's current and previous log, by pod name.
    pub logs: Vec<(String, String)>,
}

/// A container as its pod's status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// The pod's name.
    pub pod: String,
    /// The container's image.
    pub image: String,
    /// Why it is waiting (`ImagePullBackOff`, `CreateContainerConfigError`, `CrashLoopBackOff`),
    /// and the message.
    pub waiting: Option<(String, String)>,
    /// The message of its last termination, if any.
    pub last_terminated: Option<String>,
    /// How often it restarted.
    pub restarts: i32,
}

/// An event of the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSeen {
    /// `Warning` or `Normal`.
    pub type_: String,
    /// Its reason (`FailedBinding`, `Unhealthy`, …).
    pub reason: String,
    /// Its message.
    pub message: String,
    /// The name of the object it is about.
    pub object: String,
}

/// One symptom; text comparisons are case-insensitive substring matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symptom {
    /// A container waiting for one of `reasons`, its image naming `image`.
    Waiting {
        /// The waiting reasons.
        reasons: &'static [&'static str],
        /// Part of the image reference ("" for any).
        image: &'static str,
        /// Part of the waiting message ("" for any).
        message: &'static str,
    },
    /// An event with this reason whose message carries `message`.
    Event {
        /// The event's reason.
        reason: &'static str,
        /// Part of its message.
        message: &'static str,
    },
    /// A log line (current or previous log, or a last termination message) carrying `line`.
    Log {
        /// Part of the pod's name ("" for any).
        pod: &'static str,
        /// Part of the line.
        line: &'static str,
    },
    /// The failure message carries all of these (an HTTP answer, a check's verdict).
    Message(&'static [&'static str]),
}

/// A known field failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diagnosis {
    /// Its name, e.g. `etcd-image-pull`.
    pub name: &'static str,
    /// Any one of these identifies it.
    pub symptoms: &'static [Symptom],
    /// What to do, one line.
    pub hint: &'static str,
    /// Where it is reported upstream.
    pub reference: &'static str,
}

const PULL: &[&str] = &["ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull"];

/// The known field failures (ai-dynamo/dynamo issues unless said otherwise).
pub const CATALOG: &[Diagnosis] = &[
    Diagnosis {
        name: "etcd-image-pull",
        symptoms: &[Symptom::Waiting {
            reasons: PULL,
            image: "etcd",
            message: "",
        }],
        hint: "the platform chart's etcd image (bitnami/etcd:3.5.18-debian-12-r5) was removed upstream; point the chart's etcd image at one that is published",
        reference: "ai-dynamo/dynamo#2806, #4322",
    },
    Diagnosis {
        name: "kube-rbac-proxy-image-pull",
        symptoms: &[Symptom::Waiting {
            reasons: PULL,
            image: "kube-rbac-proxy",
            message: "",
        }],
        hint: "gcr.io/kubebuilder/kube-rbac-proxy is no longer published, so the operator pod stays 1/2; set the chart's kube-rbac-proxy image to a published one",
        reference: "gcr.io/kubebuilder images discontinued by kubebuilder",
    },
    Diagnosis {
        name: "no-default-storage-class",
        symptoms: &[
            Symptom::Event {
                reason: "FailedBinding",
                message: "no storage class is set",
            },
            Symptom::Message(&["no default StorageClass"]),
        ],
        hint: "etcd's and NATS's claims stay Pending: mark local-path the default (annotation storageclass.kubernetes.io/is-default-class=true), as the guide does",
        reference: "the guide's storage step",
    },
    Diagnosis {
        name: "two-default-storage-classes",
        symptoms: &[Symptom::Message(&[
            "default StorageClasses, expected exactly one",
        ])],
        hint: "claims without a class go to the newest default: remove the default annotation from every class but local-path",
        reference: "Kubernetes: multiple default StorageClasses (the newest wins since 1.26)",
    },
    Diagnosis {
        name: "operator-chart-skew",
        symptoms: &[Symptom::Log {
            pod: "operator",
            line: "flag provided but not defined",
        }],
        hint: "the operator image is of another release than the platform chart that passes it flags: install the chart and operator image of one release",
        reference: "field report: operator CrashLoop after a chart/operator image skew",
    },
    Diagnosis {
        name: "frontend-probe-needs-jq",
        symptoms: &[
            Symptom::Event {
                reason: "Unhealthy",
                message: "jq: not found",
            },
            Symptom::Event {
                reason: "Unhealthy",
                message: "jq: command not found",
            },
        ],
        hint: "the frontend's readiness probe pipes curl into jq, which the image lacks: the frontend stays 0/1 and the graph pending; use an image with jq or a probe without it",
        reference: "ai-dynamo/dynamo#3726",
    },
    Diagnosis {
        name: "missing-hf-token-secret",
        symptoms: &[Symptom::Waiting {
            reasons: &["CreateContainerConfigError"],
            image: "",
            message: "hf-token-secret",
        }],
        hint: "create the secret the graph names: kubectl create secret generic hf-token-secret --from-literal=HF_TOKEN=… -n <namespace>",
        reference: "the guide's secret step",
    },
    Diagnosis {
        name: "discovery-mismatch",
        symptoms: &[
            Symptom::Message(&["/v1/models", "observed []"]),
            Symptom::Message(&["Model not found"]),
        ],
        hint: "the frontend serves but knows no model: its workers registered elsewhere (another Dynamo namespace or discovery backend) or not at all; compare DYN_NAMESPACE and the discovery settings of frontend and workers",
        reference: "ai-dynamo/dynamo#9200, #2478; frontend Ready with no model: #11178",
    },
    Diagnosis {
        name: "nats-or-etcd-unreachable",
        symptoms: &[
            Symptom::Log {
                pod: "",
                line: "Failed to connect to NATS",
            },
            Symptom::Log {
                pod: "",
                line: "failed to connect to etcd",
            },
            Symptom::Log {
                pod: "",
                line: "Unable to connect to etcd",
            },
            // Dynamo 0.4.1's own words when etcd cannot be reached (its DistributedRuntime).
            Symptom::Log {
                pod: "",
                line: "Exception: creating primary lease",
            },
        ],
        hint: "workers cannot reach the platform's NATS or etcd: check NATS_SERVER and ETCD_ENDPOINTS in the pods and that the platform's pods and Services are up",
        reference: "field report: CrashLoop \"Failed to connect to NATS\"",
    },
    Diagnosis {
        name: "ready-while-rolling-out",
        symptoms: &[
            Symptom::Message(&["as many Ready as the graph asks"]),
            Symptom::Message(&["while a rollout is under way"]),
        ],
        hint: "the graph's status says ready while its components have fewer Ready pods than asked (a rollout or scale still under way): readiness must also count the pods",
        reference: "ai-dynamo/dynamo#3567",
    },
    Diagnosis {
        name: "liveness-fails-under-load",
        symptoms: &[
            Symptom::Event {
                reason: "Unhealthy",
                message: "Liveness probe failed",
            },
            Symptom::Message(&["/live", "while a generation streams"]),
        ],
        hint: "a worker's /live fails while it generates, so its liveness probe restarts it mid-request: the probe must not depend on the engine being idle",
        reference: "field report: worker restarted by its liveness probe under load",
    },
];

fn has(text: &str, part: &str) -> bool {
    part.is_empty() || text.to_lowercase().contains(&part.to_lowercase())
}

impl Symptom {
    /// Whether `evidence` shows this symptom.
    pub fn seen_in(&self, evidence: &Evidence) -> bool {
        match *self {
            Symptom::Waiting {
                reasons,
                image,
                message,
            } => evidence.containers.iter().any(|c| {
                c.waiting.as_ref().is_some_and(|(reason, text)| {
                    reasons.contains(&reason.as_str()) && has(&c.image, image) && has(text, message)
                })
            }),
            Symptom::Event { reason, message } => evidence
                .events
                .iter()
                .any(|e| e.reason == reason && has(&e.message, message)),
            Symptom::Log { pod, line } => {
                evidence
                    .logs
                    .iter()
                    .any(|(p, text)| has(p, pod) && has(text, line))
                    || evidence.containers.iter().any(|c| {
                        has(&c.pod, pod)
                            && c.last_terminated.as_deref().is_some_and(|t| has(t, line))
                    })
            }
            Symptom::Message(parts) => parts.iter().all(|p| has(&evidence.message, p)),
        }
    }
}

/// The catalog's entries that `evidence` shows, in catalog order.
pub fn diagnose(evidence: &Evidence) -> Vec<&'static Diagnosis> {
    CATALOG
        .iter()
        .filter(|d| d.symptoms.iter().any(|s| s.seen_in(evidence)))
        .collect()
}

/// The line a failure message ends with: each match as `diagnosis: NAME: HINT (REFERENCE)`, or
/// that none of the catalog's entries matched.
pub fn verdict(matched: &[&Diagnosis]) -> String {
    if matched.is_empty() {
        return format!(
            "diagnosis: none of the {} known field failures matched",
            CATALOG.len()
        );
    }
    matched
        .iter()
        .map(|d| format!("diagnosis: {}: {} ({})", d.name, d.hint, d.reference))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(evidence: &Evidence) -> Vec<&'static str> {
        diagnose(evidence).iter().map(|d| d.name).collect()
    }

    fn waiting(pod: &str, image: &str, reason: &str, message: &str) -> Evidence {
        Evidence {
            containers: vec![ContainerState {
                pod: pod.into(),
                image: image.into(),
                waiting: Some((reason.into(), message.into())),
                ..ContainerState::default()
            }],
            ..Evidence::default()
        }
    }

    fn event(reason: &str, message: &str) -> Evidence {
        Evidence {
            events: vec![EventSeen {
                type_: "Warning".into(),
                reason: reason.into(),
                message: message.into(),
                object: "x".into(),
            }],
            ..Evidence::default()
        }
    }

    fn message(text: &str) -> Evidence {
        Evidence {
            message: text.into(),
            ..Evidence::default()
        }
    }

    #[test]
    fn each_field_failure_is_named_by_its_symptom() {
        let cases: Vec<(Evidence, &str)> = vec![
            (
                waiting(
                    "dynamo-platform-etcd-0",
                    "bitnami/etcd:3.5.18-debian-12-r5",
                    "ImagePullBackOff",
                    "Back-off pulling image",
                ),
                "etcd-image-pull",
            ),
            (
                waiting(
                    "dynamo-platform-dynamo-operator-x",
                    "gcr.io/kubebuilder/kube-rbac-proxy:v0.15.0",
                    "ErrImagePull",
                    "",
                ),
                "kube-rbac-proxy-image-pull",
            ),
            (
                event(
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set",
                ),
                "no-default-storage-class",
            ),
            (
                message("2 default StorageClasses, expected exactly one: local-path, standard"),
                "two-default-storage-classes",
            ),
            (
                Evidence {
                    containers: vec![ContainerState {
                        pod: "dynamo-platform-dynamo-operator-controller-manager-1".into(),
                        last_terminated: Some("flag provided but not defined: -new-flag".into()),
                        restarts: 4,
                        ..ContainerState::default()
                    }],
                    ..Evidence::default()
                },
                "operator-chart-skew",
            ),
            (
                event("Unhealthy", "Readiness probe failed: sh: 1: jq: not found"),
                "frontend-probe-needs-jq",
            ),
            (
                waiting(
                    "vllm-decode-1",
                    "vllm-runtime:0.4.1",
                    "CreateContainerConfigError",
                    "secret \"hf-token-secret\" not found",
                ),
                "missing-hf-token-secret",
            ),
            (
                message(
                    "FAIL  models.lists_model  GET /v1/models: expected \"Qwen/Qwen3-0.6B\" listed, observed []",
                ),
                "discovery-mismatch",
            ),
            (
                Evidence {
                    logs: vec![(
                        "vllm-decode-1".into(),
                        "ERROR Failed to connect to NATS at nats://x:4222".into(),
                    )],
                    ..Evidence::default()
                },
                "nats-or-etcd-unreachable",
            ),
            (
                Evidence {
                    containers: vec![ContainerState {
                        pod: "vllm-decode-1".into(),
                        last_terminated: Some(
                            "Traceback (most recent call last):\nException: creating primary lease"
                                .into(),
                        ),
                        restarts: 2,
                        ..ContainerState::default()
                    }],
                    ..Evidence::default()
                },
                "nats-or-etcd-unreachable",
            ),
            (
                message(
                    "timed out waiting for the pods of DynamoGraphDeployment ns/g to be as many Ready as the graph asks",
                ),
                "ready-while-rolling-out",
            ),
            (
                event(
                    "Unhealthy",
                    "Liveness probe failed: HTTP probe failed with statuscode: 503",
                ),
                "liveness-fails-under-load",
            ),
            // The words of `guide::graph::ready`, as the fault tests on the local provider meet them.
            (
                message(
                    "DynamoGraphDeployment ns/g says \"successful\" while a rollout is under way: VllmDecodeWorker: rolling out: 1 pods of an old revision left",
                ),
                "ready-while-rolling-out",
            ),
            (
                message(
                    "the frontend did not serve 3 completions in a row within 60s (0 in a row, 0 sent); last: /v1/models does not list Qwen/Qwen3-0.6B (observed [])",
                ),
                "discovery-mismatch",
            ),
            (
                event(
                    "Unhealthy",
                    "Readiness probe failed: /bin/sh: 1: jq: not found",
                ),
                "frontend-probe-needs-jq",
            ),
        ];
        let named: std::collections::BTreeSet<&str> = cases.iter().map(|(_, n)| *n).collect();
        assert_eq!(named.len(), CATALOG.len(), "a case for every entry");
        for (evidence, name) in &cases {
            assert_eq!(names(evidence), [*name], "{evidence:?}");
        }
    }

    #[test]
    fn unrelated_evidence_names_nothing_and_says_so() {
        let evidence = Evidence {
            message: "FAIL  response.status  POST /v1/completions: expected 200, observed 500"
                .into(),
            containers: vec![ContainerState {
                pod: "p".into(),
                image: "bitnami/etcd:3.5.18-debian-12-r5".into(),
                waiting: Some(("ContainerCreating".into(), String::new())),
                ..ContainerState::default()
            }],
            events: vec![EventSeen {
                reason: "Unhealthy".into(),
                message: "Readiness probe failed: connection refused".into(),
                ..EventSeen::default()
            }],
            logs: vec![("p".into(), "INFO all good".into())],
        };
        assert!(diagnose(&evidence).is_empty());
        assert_eq!(
            verdict(&[]),
            format!(
                "diagnosis: none of the {} known field failures matched",
                CATALOG.len()
            )
        );
    }

    #[test]
    fn a_match_reads_as_name_hint_and_reference() {
        let line = verdict(&diagnose(&event("Unhealthy", "jq: command not found")));
        assert!(
            line.starts_with("diagnosis: frontend-probe-needs-jq: the frontend's readiness probe")
        );
        assert!(line.ends_with("(ai-dynamo/dynamo#3726)"), "{line}");
    }
}
