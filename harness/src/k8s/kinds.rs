//! The custom kinds the suite reads and writes: Dynamo's graph and component deployments, kwok's port-forwards and logs.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! custom_kind {
    ($(#[$doc:meta])* $name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub struct $name {
            /// The object's metadata.
            pub metadata: ObjectMeta,
            /// Its spec, as the CRD leaves it open.
            #[serde(default)]
            pub spec: Value,
            /// Its status, once a controller wrote one.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<Value>,
        }

        impl Resource for $name {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

custom_kind!(
    /// `nvidia.com/v1alpha1` DynamoGraphDeployment: the guide's inference graph.
    DynamoGraphDeployment,
    "nvidia.com",
    "v1alpha1",
    "DynamoGraphDeployment",
    "dynamographdeployments"
);
custom_kind!(
    /// `nvidia.com/v1alpha1` DynamoComponentDeployment: one service of a graph.
    DynamoComponentDeployment,
    "nvidia.com",
    "v1alpha1",
    "DynamoComponentDeployment",
    "dynamocomponentdeployments"
);
custom_kind!(
    /// `kwok.x-k8s.io/v1alpha1` PortForward: where kwok sends a pod's forwarded ports.
    KwokPortForward,
    "kwok.x-k8s.io",
    "v1alpha1",
    "PortForward",
    "portforwards"
);
custom_kind!(
    /// `kwok.x-k8s.io/v1alpha1` Logs: which file kwok serves as a pod container's log.
    KwokLogs,
    "kwok.x-k8s.io",
    "v1alpha1",
    "Logs",
    "logs"
);

/// The `status` conditions of a custom object as `(type, status, reason, message)`.
pub fn conditions(status: Option<&Value>) -> Vec<(String, String, String, String)> {
    let text = |c: &Value, key: &str| c[key].as_str().unwrap_or_default().to_string();
    status
        .and_then(|s| s["conditions"].as_array())
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        text(c, "type"),
                        text(c, "status"),
                        text(c, "reason"),
                        text(c, "message"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the condition `kind` is `True`.
pub fn condition_true(status: Option<&Value>, kind: &str) -> bool {
    conditions(status)
        .iter()
        .any(|(t, s, _, _)| t == kind && s == "True")
}
