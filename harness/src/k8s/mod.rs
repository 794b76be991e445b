//! Kubernetes operations the stages stand on: server-side apply of fixtures and bounded, watch-driven waits.

pub mod apply;
pub mod forward;
pub mod kinds;
pub mod pods;
pub mod quantity;
pub mod wait;

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::GroupVersion;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

/// The field manager of every object the suite applies.
pub const FIELD_MANAGER: &str = "dynamo-conformance";
/// The label every object the suite creates carries, so a crashed run can be cleaned up.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "dynamo-conformance");
/// The label naming the stage that created an object.
pub const STAGE_LABEL: &str = "dynamo-conformance/stage";

/// The cluster's resource and capabilities for `api_version` (`v1`, `nvidia.com/v1alpha1`) and
/// `kind`; `None` when the cluster does not serve them or `api_version` is malformed.
pub fn resolve(
    discovery: &Discovery,
    api_version: &str,
    kind: &str,
) -> Option<(ApiResource, ApiCapabilities)> {
    let gvk = api_version.parse::<GroupVersion>().ok()?.with_kind(kind);
    discovery.resolve_gvk(&gvk)
}

/// The dynamic API of `resource`: in `namespace` when the kind is namespaced and one is given,
/// else cluster-wide.
pub fn dynamic_api(
    client: &kube::Client,
    (resource, capabilities): &(ApiResource, ApiCapabilities),
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (&capabilities.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, resource),
        _ => Api::all_with(client.clone(), resource),
    }
}

/// Errors talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// A fixture is not valid YAML of Kubernetes objects.
    #[error("invalid fixture {fixture}: {reason}")]
    InvalidFixture {
        /// The fixture's name.
        fixture: String,
        /// What is wrong.
        reason: String,
    },
    /// The cluster serves no API for a kind the fixture uses.
    #[error("the cluster serves no {kind} ({api_version}) for {fixture}; are its CRDs installed?")]
    UnknownKind {
        /// The fixture.
        fixture: String,
        /// The kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
    },
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        source: kube::Error,
    },
    /// A port-forward could not be opened.
    #[error("port-forward to pod {pod} port {port}: {reason}")]
    Forward {
        /// `namespace/pod`.
        pod: String,
        /// The pod's port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A wait ran out.
    #[error("{what} not {condition} within {waited:?}; last seen: {last_seen}")]
    Timeout {
        /// The object waited for.
        what: String,
        /// The condition.
        condition: String,
        /// How long we waited.
        waited: Duration,
        /// What was last observed (phase, conditions, the latest warning event).
        last_seen: String,
    },
}

impl K8sError {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        K8sError::Api {
            action: action.into(),
            source,
        }
    }
}
