//! What each supported Dynamo release promises, kept as data rather than as branches in cases.

use std::fmt;
use std::str::FromStr;

/// How streamed chunks report token usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Every chunk carries a running `usage` object (0.4.x).
    RunningInEveryChunk,
    /// Chunks carry no usage; a final chunk with `choices: []` carries it when
    /// `stream_options.include_usage` is asked for (OpenAI's behaviour, 1.x).
    FinalChunkWhenAsked,
}

/// The shape of an error response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    /// OpenAI's envelope `{"error": {"message": "...", "type": "...", "param": ..., "code": ...}}`
    /// (platform.openai.com/docs/guides/error-codes; what the official SDKs parse).
    OpenAiEnvelope,
    /// Any of the shapes below or the envelope: what `auto` accepts, naming the one it saw.
    AnyKnown,
    /// JSON `{"error": "Model not found"}` (0.4.x, unknown model).
    ErrorString,
    /// JSON `{"message": "...", "type": "...", "code": 404}` (1.x).
    FlatMessage,
    /// A non-empty plain-text message (0.4.x, malformed requests: axum's own rejection).
    PlainText,
}

/// What the frontend's `/health` answers once the model is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendHealth {
    /// 200 with `{"status": "healthy", ...}`.
    StatusHealthy,
}

/// The API promises of one family of Dynamo releases.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    /// Short name used on the command line and in reports.
    pub name: &'static str,
    /// The `object` field of each `/v1/models` entry.
    pub model_entry_object: &'static str,
    /// How streamed chunks report usage.
    pub stream_usage: StreamUsage,
    /// The error body of a request for an unknown model.
    pub unknown_model_error: ErrorBody,
    /// The error body of a malformed request (a missing field, an invalid `max_tokens`).
    pub malformed_error: ErrorBody,
    /// The error body of a request that is not JSON at all.
    pub invalid_json_error: ErrorBody,
    /// Tokens a `length`-finished completion may fall short of `max_tokens` by
    /// (0.4.1 stops one token early: `max_tokens` 10 gives 9).
    pub length_shortfall: u64,
    /// What `/health` of the frontend answers.
    pub frontend_health: FrontendHealth,
    /// The operator pod's containers, in order.
    pub operator_containers: &'static [&'static str],
    /// The command-line flags the release's operator (`/manager`) defines, where they were read
    /// from its source at the release's tag; `None` where not.
    pub operator_flags: Option<OperatorFlags>,
    /// Whether the platform chart runs etcd by default.
    pub platform_etcd: bool,
    /// Whether the release's mocker can run a real prefill/decode pair whose
    /// prefill worker reports the requests it served.
    pub disaggregation_observable: bool,
    /// The mocker's arguments for the guide's decode worker (`python3 -m dynamo.vllm`) and its
    /// prefill worker (`--is-prefill-worker`); `{namespace}` stands for the pod's `DYN_NAMESPACE`.
    /// 0.4.x's mocker is aggregated only and serves a named endpoint; 1.x's takes a
    /// disaggregation mode (seen here running each release's `dynamo.mocker --help`).
    pub mocker_roles: MockerRoles,
    /// How the release line's processes find each other on Kubernetes, as its operator sets it up.
    pub discovery: Discovery,
    /// How the release line's operator names and labels a graph's components and reports them in
    /// the graph's status.
    pub operator_rules: OperatorRules,
    /// Whether streamed choices may leave the `finish_reason` key out instead of sending `null`
    /// (OpenAI's chunk schema requires the key).
    pub may_omit_finish_reason: bool,
    /// Where the release's engine rejects a generation without `max_tokens` (OpenAI makes it
    /// optional), the source of that fact; a 4xx for it then passes, noted.
    pub engine_requires_max_tokens: Option<&'static str>,
}

/// The flags an operator binary defines (Go's `flag` package: `-name value`, `-name=value`,
/// `--name`; a switch takes no value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorFlags {
    /// Flags that take a value (strings, durations).
    pub values: &'static [&'static str],
    /// Boolean switches.
    pub switches: &'static [&'static str],
    /// Where the list was read.
    pub source: &'static str,
}

/// Dynamo 0.4.1's operator flags: its `cmd/main.go`, plus controller-runtime's `kubeconfig` and
/// the zap logging flags its main binds.
const OPERATOR_0_4_FLAGS: OperatorFlags = OperatorFlags {
    values: &[
        "metrics-bind-address",
        "health-probe-bind-address",
        "restrictedNamespace",
        "leader-election-id",
        "natsAddr",
        "etcdAddr",
        "istio-virtual-service-gateway",
        "ingress-controller-class-name",
        "ingress-controller-tls-secret-name",
        "ingress-host-suffix",
        "grove-termination-delay",
        "kubeconfig",
        "zap-encoder",
        "zap-log-level",
        "zap-stacktrace-level",
        "zap-time-encoding",
    ],
    switches: &[
        "leader-elect",
        "metrics-secure",
        "enable-http2",
        "virtual-service-supports-https",
        "enable-lws",
        "zap-devel",
    ],
    source: "ai-dynamo/dynamo v0.4.1 deploy/cloud/operator/cmd/main.go",
};

/// How a release line's frontend and workers find each other on Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// etcd and NATS from the platform (`ETCD_ENDPOINTS`, `NATS_SERVER`): Dynamo 0.4.x.
    EtcdAndNats,
    /// The Kubernetes API (Dynamo 1.x, the operator's default): each process writes a
    /// `DynamoWorkerMetadata` named after its pod and watches the EndpointSlices labelled
    /// `nvidia.com/dynamo-discovery-enabled=true`; the operator gives every component such a
    /// Service, the pod identity (`POD_NAME`, `POD_NAMESPACE`, `POD_UID`) and a ServiceAccount
    /// allowed to do both (ai-dynamo/dynamo `deploy/operator/internal/discovery/resource.go`,
    /// `lib/runtime/src/discovery/kube/daemon.rs`).
    Kubernetes,
}

/// How a release line's operator names, labels and reports a graph's components (read from the
/// operator's source, ai-dynamo/dynamo `deploy/operator/internal/dynamo/graph.go`, `hash.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRules {
    /// 0.4.x to 0.9.x: a DynamoComponentDeployment `<graph>-<service, lower case>` per service,
    /// labelled `nvidia.com/dynamo-component` (the service key) and `nvidia.com/dynamo-namespace`;
    /// the graph's status has its `state` and a `Ready` condition.
    V0_4,
    /// 1.x (from 1.0.0, ai-dynamo/dynamo#6110): a worker's component (componentType `worker`,
    /// `prefill` or `decode`) is named `<graph>-<service>-<hash>`, the hash the first 8 hex
    /// digits of a SHA-256 over every worker's spec with its names, labels, replicas and
    /// scaling left out, so one hash per graph and a changed worker spec renames every worker
    /// (`nvidia.com/dynamo-worker-hash` on the component and its pods); every component is
    /// labelled `nvidia.com/dynamo-graph-deployment-name`, its pods
    /// `nvidia.com/dynamo-sub-component-type` where the spec has a `subComponentType`; the
    /// graph's status also lists each service's workload and replica counts (`status.services`
    /// in `v1alpha1`, `status.components` in `v1beta1`).
    V1,
}

/// The mocker's arguments, per worker role.
#[derive(Debug, PartialEq, Eq)]
pub struct MockerRoles {
    /// For the decode worker.
    pub decode: &'static [&'static str],
    /// For the prefill worker.
    pub prefill: &'static [&'static str],
    /// Whether the release's own prefill worker registers the model (writes a model card). 0.4.x's
    /// does not: `init_prefill` serves `prefill.generate` and `prefill.clear_kv_blocks` only ("TODO
    /// register_prefill", `dynamo/vllm/main.py` of 0.4.1), so the runtime image serves those
    /// endpoints instead of running a mocker, whose card would replace the decode worker's (the
    /// guide's 0.4.0 prefill card lacks `slug`, which 0.4.1's frontend cannot read).
    pub prefill_registers_model: bool,
}

impl MockerRoles {
    /// The arguments of one role, `{namespace}` replaced.
    pub fn args(&self, prefill: bool, namespace: &str) -> Vec<String> {
        let role = if prefill { self.prefill } else { self.decode };
        role.iter()
            .map(|a| a.replace("{namespace}", namespace))
            .collect()
    }
}

impl Profile {
    /// Dynamo 0.4.x, the guide's release.
    pub const V0_4: Profile = Profile {
        name: "0.4",
        model_entry_object: "object",
        stream_usage: StreamUsage::RunningInEveryChunk,
        unknown_model_error: ErrorBody::ErrorString,
        malformed_error: ErrorBody::PlainText,
        invalid_json_error: ErrorBody::PlainText,
        length_shortfall: 1,
        frontend_health: FrontendHealth::StatusHealthy,
        operator_containers: &["kube-rbac-proxy", "manager"],
        operator_flags: Some(OPERATOR_0_4_FLAGS),
        platform_etcd: true,
        disaggregation_observable: false,
        mocker_roles: MockerRoles {
            decode: &["--endpoint", "dyn://{namespace}.backend.generate"],
            prefill: &["--endpoint", "dyn://{namespace}.prefill.generate"],
            prefill_registers_model: false,
        },
        discovery: Discovery::EtcdAndNats,
        operator_rules: OperatorRules::V0_4,
        // Seen running 0.4.1 here: streamed choices (completions and chat) carry no
        // finish_reason key until the last one.
        may_omit_finish_reason: true,
        engine_requires_max_tokens: None,
    };

    /// Dynamo 0.5.x: 0.4's API but usage only in a final chunk when asked, and JSON
    /// `{"error": "..."}` for a request missing a field (one that is not JSON still gets plain
    /// text). Seen running 0.5.1 here
    /// (`matrix --releases 0.5.1 --tier api`, 2026-12-01); its operator and platform facts are
    /// 0.4's, not seen (the graph tier has not run it).
    pub const V0_5: Profile = Profile {
        name: "0.5",
        stream_usage: StreamUsage::FinalChunkWhenAsked,
        malformed_error: ErrorBody::ErrorString,
        ..Profile::V0_4
    };

    /// Dynamo 0.6.x to 0.8.x: 0.5's, with 1.x's flat JSON errors. Seen running 0.6.1 and 0.7.1
    /// here (`matrix --releases 0.6.1,0.7.1 --tier api`, 2026-12-01), and 0.8.1 with the Hub
    /// simulated (2026-12-02); operator and platform facts as 0.5's.
    pub const V0_6: Profile = Profile {
        name: "0.6",
        unknown_model_error: ErrorBody::FlatMessage,
        malformed_error: ErrorBody::FlatMessage,
        ..Profile::V0_5
    };

    /// Dynamo 0.9.x: 0.6's, with 1.x's `/v1/models` entries (`"object": "model"`). Seen running
    /// 0.9.1 here (`matrix --releases 0.7.1,0.8.1,0.9.1,1.0.2 --tier api`, 2026-12-02, the Hub
    /// simulated); 0.8.1 still answers `"object": "object"` and keeps 0.6's.
    pub const V0_9: Profile = Profile {
        name: "0.9",
        model_entry_object: "model",
        ..Profile::V0_6
    };

    /// Dynamo 1.x.
    pub const V1: Profile = Profile {
        name: "1.x",
        model_entry_object: "model",
        stream_usage: StreamUsage::FinalChunkWhenAsked,
        unknown_model_error: ErrorBody::FlatMessage,
        malformed_error: ErrorBody::FlatMessage,
        invalid_json_error: ErrorBody::FlatMessage,
        length_shortfall: 0,
        frontend_health: FrontendHealth::StatusHealthy,
        operator_containers: &["manager"],
        operator_flags: None,
        platform_etcd: false,
        disaggregation_observable: true,
        mocker_roles: MockerRoles {
            decode: &["--disaggregation-mode", "decode"],
            prefill: &["--disaggregation-mode", "prefill"],
            prefill_registers_model: true,
        },
        discovery: Discovery::Kubernetes,
        operator_rules: OperatorRules::V1,
        // Seen running 1.6.1 here: streamed /v1/completions choices carry no finish_reason key
        // until the last one (chat completions send null).
        may_omit_finish_reason: true,
        // The engine here is the mocker, the suite's stand-in for vLLM (which defaults to the
        // context): its 400 is a fact of the simulation, not of the release's frontend.
        engine_requires_max_tokens: Some(
            "1.6.1's mocker answers 400 \"max_tokens is required by the mocker worker\", seen here",
        ),
    };

    /// OpenAI's published contract, strictly: what the official SDKs rely on. Not a release;
    /// every endpoint is also judged against it, beside its release's own profile.
    pub const OPENAI: Profile = Profile {
        name: "openai",
        unknown_model_error: ErrorBody::OpenAiEnvelope,
        malformed_error: ErrorBody::OpenAiEnvelope,
        invalid_json_error: ErrorBody::OpenAiEnvelope,
        may_omit_finish_reason: false,
        engine_requires_max_tokens: None,
        ..Profile::V1
    };

    /// Every release profile, oldest first.
    pub const ALL: [&'static Profile; 5] = [
        &Profile::V0_4,
        &Profile::V0_5,
        &Profile::V0_6,
        &Profile::V0_9,
        &Profile::V1,
    ];

    /// `auto`'s reading of a release profile: its promises, but any known error shape accepted
    /// (and named), since a release's error bodies differ between its own endpoints.
    const fn lenient(self) -> Profile {
        Profile {
            unknown_model_error: ErrorBody::AnyKnown,
            malformed_error: ErrorBody::AnyKnown,
            invalid_json_error: ErrorBody::AnyKnown,
            ..self
        }
    }

    const AUTO_V0_4: Profile = Profile::V0_4.lenient();
    const AUTO_V0_5: Profile = Profile::V0_5.lenient();
    const AUTO_V0_6: Profile = Profile::V0_6.lenient();
    const AUTO_V0_9: Profile = Profile::V0_9.lenient();
    const AUTO_V1: Profile = Profile::V1.lenient();
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A profile as asked for on the command line: a concrete one, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileChoice {
    /// Check against this profile only.
    Exactly(&'static Profile),
    /// Accept what any supported release does and report which one matched.
    Auto,
}

impl ProfileChoice {
    /// The profiles to validate against; under `auto` newest first, since a newer release's
    /// answers may also satisfy an older lenient profile.
    pub fn candidates(self) -> Vec<&'static Profile> {
        match self {
            ProfileChoice::Exactly(profile) => vec![profile],
            ProfileChoice::Auto => vec![
                &Profile::AUTO_V1,
                &Profile::AUTO_V0_9,
                &Profile::AUTO_V0_6,
                &Profile::AUTO_V0_5,
                &Profile::AUTO_V0_4,
            ],
        }
    }
}

impl fmt::Display for ProfileChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileChoice::Exactly(profile) => profile.fmt(f),
            ProfileChoice::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for ProfileChoice {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(ProfileChoice::Auto),
            "0.4" | "0.4.x" => Ok(ProfileChoice::Exactly(&Profile::V0_4)),
            "0.5" | "0.5.x" => Ok(ProfileChoice::Exactly(&Profile::V0_5)),
            "0.6" | "0.6.x" | "0.7" | "0.7.x" | "0.8" | "0.8.x" => {
                Ok(ProfileChoice::Exactly(&Profile::V0_6))
            }
            "0.9" | "0.9.x" => Ok(ProfileChoice::Exactly(&Profile::V0_9)),
            "1" | "1.x" => Ok(ProfileChoice::Exactly(&Profile::V1)),
            "openai" => Ok(ProfileChoice::Exactly(&Profile::OPENAI)),
            other => Err(ProfileError::UnknownProfile(other.to_string())),
        }
    }
}

/// Errors naming a release or profile the suite does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// A profile name other than `0.4`, `0.5`, `0.6`, `0.9`, `1.x`, `openai` or `auto`.
    #[error("unknown profile '{0}' (expected one of: 0.4, 0.5, 0.6, 0.9, 1.x, openai, auto)")]
    UnknownProfile(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("auto", ProfileChoice::Auto)]
    #[case("0.4", ProfileChoice::Exactly(&Profile::V0_4))]
    #[case("0.5", ProfileChoice::Exactly(&Profile::V0_5))]
    #[case("0.7", ProfileChoice::Exactly(&Profile::V0_6))]
    #[case("0.8", ProfileChoice::Exactly(&Profile::V0_6))]
    #[case("0.9.x", ProfileChoice::Exactly(&Profile::V0_9))]
    #[case("1.x", ProfileChoice::Exactly(&Profile::V1))]
    fn profiles_parse(#[case] input: &str, #[case] expected: ProfileChoice) {
        assert_eq!(input.parse::<ProfileChoice>(), Ok(expected));
    }

    #[test]
    fn an_invalid_profile_names_the_choices() {
        let err = "2.0".parse::<ProfileChoice>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile '2.0' (expected one of: 0.4, 0.5, 0.6, 0.9, 1.x, openai, auto)"
        );
    }

    #[test]
    fn each_version_maps_to_its_profile() {
        let profile = |v: &str| {
            v.parse::<crate::release::DynamoVersion>()
                .unwrap()
                .profile()
                .name
        };
        assert_eq!(profile("0.4.1"), "0.4");
        assert_eq!(profile("0.5.1"), "0.5");
        assert_eq!(profile("0.6.1"), "0.6");
        assert_eq!(profile("0.7.1"), "0.6");
        assert_eq!(profile("0.8.1"), "0.6");
        assert_eq!(profile("0.9.1"), "0.9");
        assert_eq!(profile("1.0.2"), "1.x");
        assert_eq!(profile("1.6.1"), "1.x");
        assert_eq!(ProfileChoice::Auto.candidates().len(), Profile::ALL.len());
    }
}
