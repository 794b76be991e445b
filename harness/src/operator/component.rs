//! A component deployment as the Deployment and Service Dynamo 0.4.1's operator makes of it.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Map, Value, json};

use crate::k8s::kinds::DynamoComponentDeployment;

/// The label that selects a component's pods.
pub const SELECTOR_LABEL: &str = "nvidia.com/selector";
/// The label carrying a component's type (frontend, worker), on its pods.
pub const TYPE_LABEL: &str = "nvidia.com/dynamo-component-type";
/// The label carrying a worker's role (`decode`, `prefill`) on its pods (1.x).
pub const SUB_TYPE_LABEL: &str = "nvidia.com/dynamo-sub-component-type";
/// The frontend's HTTP port.
pub const HTTP_PORT: i32 = 8000;
/// A worker's system port (health, metrics).
pub const SYSTEM_PORT: i32 = 9090;

/// What the operator's flags add to every container: the platform's NATS and etcd addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformEnv {
    /// `--natsAddr`, e.g. `nats://dynamo-platform-nats.dynamo-cloud:4222`.
    pub nats: Option<String>,
    /// `--etcdAddr`, e.g. `dynamo-platform-etcd.dynamo-cloud:2379`.
    pub etcd: Option<String>,
}

fn env(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// The labels that put a component's pods into Kubernetes discovery (1.x): the Service carries
/// them, and the EndpointSlice controller copies them onto the slices the processes watch.
pub const DISCOVERY_LABELS: [(&str, &str); 2] = [
    ("nvidia.com/dynamo-discovery-backend", "kubernetes"),
    ("nvidia.com/dynamo-discovery-enabled", "true"),
];

/// Whether the component gets the release line's Kubernetes discovery (1.x).
fn kube_discovery(dcd: &DynamoComponentDeployment) -> bool {
    super::release_of(dcd.metadata.annotations.as_ref())
        .profile()
        .discovery
        == crate::profile::Discovery::Kubernetes
}

fn http_probe(path: &str, port: &str, period: u32, timeout: u32, failures: u32) -> Value {
    json!({
        "httpGet": { "path": path, "port": port },
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures
    })
}

/// Later lists win by name: `layers` from lowest to highest precedence.
fn merge_env(layers: &[Vec<Value>]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::new();
    for layer in layers {
        for var in layer {
            match merged.iter_mut().find(|v| v["name"] == var["name"]) {
                Some(slot) => *slot = var.clone(),
                None => merged.push(var.clone()),
            }
        }
    }
    merged
}

/// `resources` of the CRD (`cpu`, `memory`, `gpu` as strings) as a container's; `requests.gpu` is ignored.
fn resources(spec: &Value) -> Value {
    let mut out = Map::new();
    for side in ["requests", "limits"] {
        let given = &spec["resources"][side];
        let mut list = Map::new();
        for (key, name) in [("cpu", "cpu"), ("memory", "memory")] {
            if let Some(v) = given[key].as_str() {
                list.insert(name.into(), v.into());
            }
        }
        if side == "limits"
            && let Some(gpu) = given["gpu"].as_str()
        {
            list.insert("nvidia.com/gpu".into(), gpu.into());
        }
        if let Some(custom) = given["custom"].as_object() {
            list.extend(custom.clone());
        }
        if !list.is_empty() {
            out.insert(side.into(), Value::Object(list));
        }
    }
    Value::Object(out)
}

/// The labels the pods, Deployment and Service carry.
pub fn pod_labels(dcd: &DynamoComponentDeployment) -> Map<String, Value> {
    let name = dcd.metadata.name.clone().unwrap_or_default();
    let mut labels: Map<String, Value> = dcd
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if let Some(spec_labels) = dcd.spec["labels"].as_object() {
        labels.extend(spec_labels.clone());
    }
    labels.insert(SELECTOR_LABEL.into(), name.into());
    labels.insert("nvidia.com/metrics-enabled".into(), "true".into());
    if let Some(kind) = dcd.spec["componentType"].as_str() {
        labels.insert(TYPE_LABEL.into(), kind.into());
    }
    if let Some(role) = dcd.spec["subComponentType"].as_str()
        && super::release_of(dcd.metadata.annotations.as_ref())
            .profile()
            .operator_rules
            == crate::profile::OperatorRules::V1
    {
        labels.insert(SUB_TYPE_LABEL.into(), role.into());
    }
    if let Some(extra) = dcd.spec["extraPodMetadata"]["labels"].as_object() {
        labels.extend(extra.clone());
    }
    if kube_discovery(dcd) {
        for (k, v) in DISCOVERY_LABELS {
            labels.insert(k.into(), v.into());
        }
    }
    labels
}

fn owner(dcd: &DynamoComponentDeployment) -> Value {
    json!([{
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoComponentDeployment",
        "name": dcd.metadata.name,
        "uid": dcd.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true
    }])
}

/// The graph a component belongs to, from its owner reference.
fn parent_graph(dcd: &DynamoComponentDeployment) -> String {
    dcd.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "DynamoGraphDeployment")
        .map(|o| o.name.clone())
        .unwrap_or_default()
}

/// The main container: the operator's defaults for the component type, then the spec's overrides.
fn main_container(dcd: &DynamoComponentDeployment, platform: &PlatformEnv) -> Value {
    let spec = &dcd.spec;
    let kind = spec["componentType"].as_str().unwrap_or_default();
    let namespace = dcd.metadata.namespace.clone().unwrap_or_default();
    let mut defaults = vec![
        env(
            "DYN_NAMESPACE",
            spec["dynamoNamespace"].as_str().unwrap_or_default(),
        ),
        env("DYN_PARENT_DGD_K8S_NAME", &parent_graph(dcd)),
        env("DYN_PARENT_DGD_K8S_NAMESPACE", &namespace),
    ];
    if let Some(nats) = &platform.nats {
        defaults.push(env("NATS_SERVER", nats));
    }
    if let Some(etcd) = &platform.etcd {
        defaults.push(env("ETCD_ENDPOINTS", etcd));
    }
    if kube_discovery(dcd) {
        defaults.push(field_env("POD_NAME", "metadata.name"));
        defaults.push(field_env("POD_NAMESPACE", "metadata.namespace"));
        defaults.push(field_env("POD_UID", "metadata.uid"));
        defaults.push(env("DYN_DISCOVERY_BACKEND", "kubernetes"));
    }
    let mut container = Map::new();
    container.insert("name".into(), "main".into());
    container.insert("command".into(), json!(["/bin/sh", "-c"]));
    match kind {
        "frontend" => {
            container.insert("command".into(), json!(["python3"]));
            container.insert("args".into(), json!(["-m", "dynamo.frontend"]));
            container.insert(
                "ports".into(),
                json!([{ "name": "http", "containerPort": HTTP_PORT, "protocol": "TCP" }]),
            );
            defaults.push(env("DYNAMO_PORT", &HTTP_PORT.to_string()));
            defaults.push(env("DYN_HTTP_PORT", &HTTP_PORT.to_string()));
            container.insert(
                "livenessProbe".into(),
                http_probe("/health", "http", 60, 30, 10),
            );
            container.insert(
                "readinessProbe".into(),
                json!({
                    "exec": { "command": ["/bin/sh", "-c", "curl -s http://localhost:${DYNAMO_PORT}/health | jq -e \".status == \\\"healthy\\\"\""] },
                    "periodSeconds": 60, "timeoutSeconds": 30, "failureThreshold": 10
                }),
            );
        }
        "worker" => {
            container.insert(
                "ports".into(),
                json!([{ "name": "system", "containerPort": SYSTEM_PORT, "protocol": "TCP" }]),
            );
            defaults.push(env("DYN_SYSTEM_ENABLED", "true"));
            defaults.push(env(
                "DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS",
                "[\"generate\"]",
            ));
            defaults.push(env("DYN_SYSTEM_PORT", &SYSTEM_PORT.to_string()));
            container.insert(
                "livenessProbe".into(),
                http_probe("/live", "system", 5, 30, 1),
            );
            container.insert(
                "readinessProbe".into(),
                http_probe("/health", "system", 10, 30, 60),
            );
            container.insert(
                "startupProbe".into(),
                http_probe("/live", "system", 10, 5, 60),
            );
        }
        _ => {}
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        if spec[probe].is_object() {
            container.insert(probe.into(), spec[probe].clone());
        }
    }
    let envs = spec["envs"].as_array().cloned().unwrap_or_default();
    let main = spec["extraPodSpec"]["mainContainer"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let main_env = main
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    container.insert(
        "env".into(),
        Value::Array(merge_env(&[envs, defaults, main_env])),
    );
    container.insert("resources".into(), resources(spec));
    if let Some(secret) = spec["envFromSecret"].as_str() {
        container.insert(
            "envFrom".into(),
            json!([{ "secretRef": { "name": secret } }]),
        );
    }
    container.insert(
        "volumeMounts".into(),
        json!([{ "name": "shared-memory", "mountPath": "/dev/shm" }]),
    );
    for (key, value) in main {
        let empty = value.is_null()
            || value.as_str() == Some("")
            || value.as_array().is_some_and(Vec::is_empty)
            || value.as_object().is_some_and(Map::is_empty);
        if key != "env" && !empty {
            container.insert(key, value);
        }
    }
    Value::Object(container)
}

/// The component's Deployment, ready to apply.
pub fn deployment(dcd: &DynamoComponentDeployment, platform: &PlatformEnv) -> Value {
    let name = dcd.metadata.name.clone().unwrap_or_default();
    let labels = pod_labels(dcd);
    let mut pod = Map::new();
    pod.insert("containers".into(), json!([main_container(dcd, platform)]));
    pod.insert("restartPolicy".into(), "Always".into());
    pod.insert("terminationGracePeriodSeconds".into(), 60.into());
    pod.insert(
        "volumes".into(),
        json!([{ "name": "shared-memory", "emptyDir": { "medium": "Memory", "sizeLimit": "8Gi" } }]),
    );
    if kube_discovery(dcd) {
        pod.insert(
            "serviceAccountName".into(),
            super::graph::discovery_account(&parent_graph(dcd)).into(),
        );
    }
    if let Some(extra) = dcd.spec["extraPodSpec"].as_object() {
        for (key, value) in extra {
            if key != "mainContainer" && !value.is_null() {
                pod.insert(key.clone(), value.clone());
            }
        }
    }
    let annotations = dcd.spec["extraPodMetadata"]["annotations"].clone();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": dcd.metadata.namespace,
            "labels": labels,
            "ownerReferences": owner(dcd)
        },
        "spec": {
            "replicas": dcd.spec["replicas"].as_i64().unwrap_or(1),
            "selector": { "matchLabels": { SELECTOR_LABEL: name } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" } },
            "template": {
                "metadata": { "labels": labels, "annotations": if annotations.is_object() { annotations } else { json!({}) } },
                "spec": Value::Object(pod)
            }
        }
    })
}

/// The component's Service: the frontend's (port `http`, 8000) always; under Kubernetes discovery
/// (1.x) every component's, a worker's on its `system` port 9090, labelled for discovery.
pub fn service(dcd: &DynamoComponentDeployment) -> Option<Value> {
    let port = match dcd.spec["componentType"].as_str() {
        Some("frontend") => {
            json!({ "name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP" })
        }
        _ if kube_discovery(dcd) => {
            json!({ "name": "system", "port": SYSTEM_PORT, "targetPort": "system", "protocol": "TCP" })
        }
        _ => return None,
    };
    let labels = pod_labels(dcd);
    Some(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": dcd.metadata.name,
            "namespace": dcd.metadata.namespace,
            "labels": labels,
            "ownerReferences": owner(dcd)
        },
        "spec": {
            "selector": labels,
            "ports": [port]
        }
    }))
}

/// Whether the Deployment is rolled out and available, as 0.4.1's operator judges it.
pub fn available(deployment: Option<&Deployment>) -> bool {
    let Some(d) = deployment else { return false };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if desired == 0 {
        return true;
    }
    let Some(status) = &d.status else {
        return false;
    };
    let generation = d.metadata.generation.unwrap_or_default();
    status.observed_generation.unwrap_or_default() >= generation
        && status.updated_replicas.unwrap_or_default() >= desired
        && status.available_replicas.unwrap_or_default() >= desired
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Available" && c.status == "True")
}

/// The component's status: its `Available` condition, and the `generation` it was written for.
pub fn status(available: bool, generation: Option<i64>, now: &str) -> Value {
    let (state, reason, message) = if available {
        ("True", "DeploymentReady", "Deployment is ready")
    } else {
        ("False", "DeploymentNotReady", "Deployment is not ready")
    };
    json!({ "observedGeneration": generation, "conditions": [{
        "type": "Available", "status": state, "reason": reason, "message": message, "lastTransitionTime": now
    }] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::kinds::DynamoGraphDeployment;
    use crate::operator::graph;

    fn guide_components() -> Vec<DynamoComponentDeployment> {
        components_of_release(None)
    }

    fn components_of_release(release: Option<&str>) -> Vec<DynamoComponentDeployment> {
        let mut value: Value =
            serde_saphyr::from_str(include_str!("../../../fixtures/guide/disagg-graph.yaml"))
                .unwrap();
        value["metadata"]["namespace"] = "dynamo-cloud".into();
        if let Some(release) = release {
            value["metadata"]["annotations"][crate::operator::RELEASE_ANNOTATION] = release.into();
        }
        let g: DynamoGraphDeployment = serde_json::from_value(value).unwrap();
        graph::components(&g)
            .unwrap()
            .into_iter()
            .map(|c| serde_json::from_value(c).unwrap())
            .collect()
    }

    fn env_of(d: &Value) -> Vec<(String, String)> {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().into(),
                    e["value"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    }

    #[test]
    fn a_worker_gets_the_gpu_limit_runtime_class_secret_and_system_port() {
        let platform = PlatformEnv {
            nats: Some("nats://n:4222".into()),
            etcd: Some("e:2379".into()),
        };
        let d = deployment(&guide_components()[1], &platform);
        let pod = &d["spec"]["template"]["spec"];
        let main = &pod["containers"][0];
        assert_eq!(pod["runtimeClassName"], "nvidia");
        assert_eq!(main["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert!(
            main["resources"]["requests"]
                .get("nvidia.com/gpu")
                .is_none()
        );
        assert_eq!(main["envFrom"][0]["secretRef"]["name"], "hf-token-secret");
        assert_eq!(main["ports"][0]["containerPort"], SYSTEM_PORT);
        assert_eq!(main["image"], "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1");
        assert_eq!(main["command"], json!(["/bin/sh", "-c"]));
        let env = env_of(&d);
        for (k, v) in [
            ("DYN_NAMESPACE", "vllm-v1-disagg-router"),
            ("DYN_PARENT_DGD_K8S_NAME", "vllm-v1-disagg-router"),
            ("DYN_SYSTEM_PORT", "9090"),
            ("ETCD_ENDPOINTS", "e:2379"),
            ("NATS_SERVER", "nats://n:4222"),
        ] {
            assert!(
                env.contains(&(k.into(), v.into())),
                "{k}={v} missing from {env:?}"
            );
        }
        assert_eq!(
            d["spec"]["selector"]["matchLabels"][SELECTOR_LABEL],
            "vllm-v1-disagg-router-vllmdecodeworker"
        );
        assert!(service(&guide_components()[1]).is_none());
    }

    #[test]
    fn under_1x_every_component_joins_kubernetes_discovery() {
        let components = components_of_release(Some("1.6.1"));
        let worker = &components[1];
        let d = deployment(worker, &PlatformEnv::default());
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["serviceAccountName"],
            "vllm-v1-disagg-router-k8s-service-discovery"
        );
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let field = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
        };
        assert_eq!(field("POD_NAME"), Some(json!("metadata.name")));
        assert_eq!(field("POD_NAMESPACE"), Some(json!("metadata.namespace")));
        assert_eq!(field("POD_UID"), Some(json!("metadata.uid")));
        assert!(env_of(&d).contains(&("DYN_DISCOVERY_BACKEND".into(), "kubernetes".into())));
        let svc = service(worker).expect("a worker's Service under 1.x");
        assert_eq!(svc["spec"]["ports"][0]["name"], "system");
        assert_eq!(svc["spec"]["ports"][0]["port"], SYSTEM_PORT);
        for (k, v) in DISCOVERY_LABELS {
            assert_eq!(svc["metadata"]["labels"][k], v);
            assert_eq!(d["spec"]["template"]["metadata"]["labels"][k], v);
        }
        // 0.4.1's rules: no discovery labels, no worker Service, no account.
        let old = &guide_components()[1];
        assert!(service(old).is_none());
        let d = deployment(old, &PlatformEnv::default());
        assert!(
            d["spec"]["template"]["spec"]
                .get("serviceAccountName")
                .is_none()
        );
    }

    #[test]
    fn under_1x_a_workers_role_is_labelled_on_its_pods() {
        let with_role = |release: Option<&str>| {
            let mut worker = components_of_release(release).remove(1);
            worker.spec["subComponentType"] = "prefill".into();
            pod_labels(&worker)
        };
        assert_eq!(with_role(Some("1.6.1"))[SUB_TYPE_LABEL], "prefill");
        assert!(with_role(None).get(SUB_TYPE_LABEL).is_none());
    }

    #[test]
    fn a_1x_graph_gets_the_discovery_account_and_role() {
        let mut value: Value =
            serde_saphyr::from_str(include_str!("../../../fixtures/guide/disagg-graph.yaml"))
                .unwrap();
        value["metadata"]["namespace"] = "dynamo-cloud".into();
        let g: DynamoGraphDeployment = serde_json::from_value(value).unwrap();
        let objects = graph::discovery_access(&g);
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
        let rules = objects[1]["rules"].as_array().unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r["resources"] == json!(["dynamoworkermetadatas"])
                    && r["verbs"].as_array().unwrap().contains(&json!("create")))
        );
        assert!(
            rules
                .iter()
                .any(|r| r["resources"] == json!(["endpointslices"]))
        );
        assert_eq!(
            objects[2]["subjects"][0]["name"],
            "vllm-v1-disagg-router-k8s-service-discovery"
        );
    }

    #[test]
    fn the_frontend_gets_its_service_on_8000_and_the_guides_probes() {
        let frontend = &guide_components()[0];
        let d = deployment(frontend, &PlatformEnv::default());
        let main = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(main["readinessProbe"]["initialDelaySeconds"], 60);
        assert_eq!(main["livenessProbe"]["httpGet"]["port"], 8000);
        let s = service(frontend).unwrap();
        assert_eq!(s["metadata"]["name"], "vllm-v1-disagg-router-frontend");
        assert_eq!(s["spec"]["ports"][0]["port"], HTTP_PORT);
        assert_eq!(s["spec"]["selector"][TYPE_LABEL], "frontend");
    }

    #[test]
    fn container_env_beats_operator_defaults_which_beat_spec_envs() {
        let merged = merge_env(&[
            vec![env("A", "spec"), env("B", "spec")],
            vec![env("A", "default")],
            vec![env("B", "container")],
        ]);
        assert_eq!(merged, vec![env("A", "default"), env("B", "container")]);
    }
}
