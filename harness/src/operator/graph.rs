//! A graph's services as DynamoComponentDeployments, named, labelled and owned as Dynamo 0.4.1's operator does.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Map, Value, json};

use super::OperatorError;
use crate::k8s::kinds::DynamoGraphDeployment;

/// Label naming the graph service a component deployment came from.
pub const COMPONENT_LABEL: &str = "nvidia.com/dynamo-component";
/// Label naming the Dynamo namespace of a graph.
pub const NAMESPACE_LABEL: &str = "nvidia.com/dynamo-namespace";

/// Label naming the graph a component belongs to (1.x).
pub const GRAPH_LABEL: &str = "nvidia.com/dynamo-graph-deployment-name";
/// Label carrying the worker hash in a worker component's name (1.x).
pub const WORKER_HASH_LABEL: &str = "nvidia.com/dynamo-worker-hash";

/// The component deployment name of `service` in graph `graph`: `<graph>-<service, lower case>`,
/// and `-<hash>` after it for a worker under 1.x's rules ([`worker_hash`]).
pub fn component_name(graph: &str, service: &str, hash: Option<&str>) -> String {
    match hash {
        Some(hash) => format!("{graph}-{}-{hash}", service.to_lowercase()),
        None => format!("{graph}-{}", service.to_lowercase()),
    }
}

/// Whether a service (v1alpha1 shape) is a worker by 1.x's rule: componentType `worker`,
/// `prefill` or `decode` (its subComponentType plays no part).
pub fn is_worker(spec: &Value) -> bool {
    matches!(
        spec["componentType"].as_str(),
        Some("worker" | "prefill" | "decode")
    )
}

/// 1.x's worker hash of a graph's services ([`crate::profile::OperatorRules::V1`]): the first 8
/// hex digits of the SHA-256 of every worker's spec as JSON, by service name, with what does
/// not change a worker's pods left out (names, labels, annotations, component types, Dynamo
/// namespace, replicas, autoscaling, ingress, model reference, EPP config). `None` without a
/// worker. The rule is the operator's "v1" hash (1.0 to 1.3 name new graphs with it, 1.4 with
/// one over the generated components); the bytes hashed are this stand-in's, so the digits
/// differ from a real operator's.
pub fn worker_hash(services: &Map<String, Value>) -> Option<String> {
    const LEFT_OUT: [&str; 12] = [
        "annotations",
        "labels",
        "serviceName",
        "componentType",
        "subComponentType",
        "dynamoNamespace",
        "replicas",
        "autoscaling",
        "scalingAdapter",
        "ingress",
        "modelRef",
        "eppConfig",
    ];
    let workers: Map<String, Value> = services
        .iter()
        .filter(|(_, spec)| is_worker(spec))
        .map(|(name, spec)| {
            let mut spec = spec.clone();
            if let Some(fields) = spec.as_object_mut() {
                fields.retain(|k, _| !LEFT_OUT.contains(&k.as_str()));
            }
            (name.clone(), spec)
        })
        .collect();
    if workers.is_empty() {
        return None;
    }
    let text = Value::Object(workers).to_string();
    Some(crate::dynamo::install::digest(&[text.as_bytes()])[..8].to_string())
}

/// The graph's Dynamo namespace: the services' common `dynamoNamespace`, else `dynamo-<graph>`.
pub fn dynamo_namespace(
    graph: &str,
    services: &Map<String, Value>,
) -> Result<String, OperatorError> {
    let mut named = services
        .values()
        .filter_map(|s| s["dynamoNamespace"].as_str())
        .collect::<Vec<_>>();
    named.sort_unstable();
    named.dedup();
    match named.as_slice() {
        [] => Ok(format!("dynamo-{graph}")),
        [one]
            if named.len() == 1 && services.values().all(|s| s["dynamoNamespace"].is_string()) =>
        {
            Ok(one.to_string())
        }
        _ => Err(OperatorError::Invalid {
            object: format!("DynamoGraphDeployment {graph}"),
            reason: format!("services disagree on dynamoNamespace: {named:?}"),
        }),
    }
}

/// A graph spec's services as v1alpha1 spells them (`spec.services`, a map by service name),
/// from either version: v1alpha1's map as written, or v1beta1's `spec.components` list mapped as
/// the operator's own conversion does (ai-dynamo/dynamo `deploy/operator/api/v1alpha1/`
/// `*_conversion.go`, read on main 2026-08): `name` is the key; `type` frontend stays
/// `componentType`, prefill and decode become a `worker` of that `subComponentType`; the
/// `main` container's `image`, `workingDir`, `command`, `args` and `startupProbe` go to
/// `extraPodSpec.mainContainer`, its `env` to `envs`, a `secretRef` of `envFrom` to
/// `envFromSecret`, its `resources` (`nvidia.com/gpu` as `gpu`) and liveness and readiness
/// probes to the service; the rest of the pod spec to `extraPodSpec`.
///
/// # Errors
/// Why the spec has neither shape, or a component no `main` container, as one line.
pub fn services_of(spec: &Value) -> Result<Map<String, Value>, String> {
    if let Some(services) = spec["services"].as_object() {
        return Ok(services.clone());
    }
    let components = spec["components"]
        .as_array()
        .ok_or("spec.services (v1alpha1) and spec.components (v1beta1) are both missing")?;
    let mut services = Map::new();
    for component in components {
        let name = component["name"]
            .as_str()
            .ok_or("a component of spec.components has no name")?;
        let mut pod = component["podTemplate"]["spec"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut containers = pod
            .remove("containers")
            .and_then(|c| c.as_array().cloned())
            .unwrap_or_default();
        let main = containers
            .iter()
            .position(|c| c["name"] == "main")
            .map(|i| containers.remove(i))
            .and_then(|c| c.as_object().cloned())
            .ok_or_else(|| format!("component {name} has no container named main"))?;
        let mut service = Map::new();
        match component["type"].as_str().unwrap_or("worker") {
            kind @ ("prefill" | "decode") => {
                service.insert("componentType".into(), "worker".into());
                service.insert("subComponentType".into(), kind.into());
            }
            kind => {
                service.insert("componentType".into(), kind.into());
            }
        }
        service.insert(
            "replicas".into(),
            component.get("replicas").cloned().unwrap_or(json!(1)),
        );
        let mut main_container = Map::new();
        for (key, value) in main {
            match key.as_str() {
                "env" => {
                    service.insert("envs".into(), value);
                }
                "envFrom" => {
                    if let Some(secret) = value
                        .as_array()
                        .and_then(|e| e.iter().find_map(|s| s["secretRef"]["name"].as_str()))
                    {
                        service.insert("envFromSecret".into(), secret.into());
                    }
                }
                "resources" => {
                    let mut resources = value;
                    for bound in ["requests", "limits"] {
                        if let Some(map) = resources[bound].as_object_mut()
                            && let Some(gpus) = map.remove("nvidia.com/gpu")
                        {
                            map.insert("gpu".into(), gpus);
                        }
                    }
                    service.insert("resources".into(), resources);
                }
                "livenessProbe" | "readinessProbe" => {
                    service.insert(key, value);
                }
                "name" => {}
                _ => {
                    main_container.insert(key, value);
                }
            }
        }
        if !containers.is_empty() {
            pod.insert("containers".into(), Value::Array(containers));
        }
        pod.insert("mainContainer".into(), Value::Object(main_container));
        service.insert("extraPodSpec".into(), Value::Object(pod));
        services.insert(name.to_string(), Value::Object(service));
    }
    Ok(services)
}

/// A JSON merge patch (RFC 7386) of a graph whose spec is `spec`, in the spec's own shape, that
/// merges `main` into the main container of each of `services`: v1alpha1's
/// `services.<name>.extraPodSpec.mainContainer`, or v1beta1's container `main` of the component's
/// `podTemplate` (the whole `components` list, as a merge patch replaces lists).
///
/// # Errors
/// A service the spec does not have, or a spec of neither shape, as one line.
pub fn main_container_patch(
    spec: &Value,
    services: &[&str],
    main: &Value,
) -> Result<Value, String> {
    if spec["services"].is_object() {
        let mut patch = Map::new();
        for service in services {
            if spec["services"][*service].is_null() {
                return Err(format!("the graph has no service {service}"));
            }
            patch.insert(
                service.to_string(),
                json!({ "extraPodSpec": { "mainContainer": main } }),
            );
        }
        return Ok(json!({ "spec": { "services": patch } }));
    }
    let mut components = spec["components"]
        .as_array()
        .cloned()
        .ok_or("spec.services (v1alpha1) and spec.components (v1beta1) are both missing")?;
    for service in services {
        let container = components
            .iter_mut()
            .find(|c| c["name"] == *service)
            .and_then(|c| c["podTemplate"]["spec"]["containers"].as_array_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c["name"] == "main"))
            .ok_or_else(|| format!("the graph has no component {service} with a main container"))?;
        json_patch::merge(container, main);
    }
    Ok(json!({ "spec": { "components": components } }))
}

/// A JSON merge patch of a graph whose spec is `spec`, in the spec's own shape, that sets the
/// `replicas` of each of `services` (services the spec does not have are left out).
pub fn replicas_patch(spec: &Value, services: &[&str], replicas: i64) -> Value {
    if let Some(map) = spec["services"].as_object() {
        let patch: Map<String, Value> = services
            .iter()
            .filter(|s| map.contains_key(**s))
            .map(|s| (s.to_string(), json!({ "replicas": replicas })))
            .collect();
        return json!({ "spec": { "services": patch } });
    }
    let mut components = spec["components"].as_array().cloned().unwrap_or_default();
    for component in &mut components {
        if component["name"]
            .as_str()
            .is_some_and(|name| services.contains(&name))
        {
            component["replicas"] = replicas.into();
        }
    }
    json!({ "spec": { "components": components } })
}

/// A service's workload as 1.x's graph status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The service's name in the graph.
    pub service: String,
    /// The Deployment's name (the component deployment's).
    pub name: String,
    /// `spec.replicas`, `status.updatedReplicas`, `readyReplicas`, `availableReplicas`.
    pub replicas: [i64; 4],
}

impl Workload {
    /// The workload of `service`, Deployment `name` (`None` while not yet created: all zero).
    pub fn of(service: &str, name: &str, deployment: Option<&Deployment>) -> Workload {
        let spec = deployment.and_then(|d| d.spec.as_ref());
        let status = deployment
            .and_then(|d| d.status.clone())
            .unwrap_or_default();
        Workload {
            service: service.to_string(),
            name: name.to_string(),
            replicas: [
                i64::from(spec.and_then(|s| s.replicas).unwrap_or(0)),
                i64::from(status.updated_replicas.unwrap_or(0)),
                i64::from(status.ready_replicas.unwrap_or(0)),
                i64::from(status.available_replicas.unwrap_or(0)),
            ],
        }
    }
}

/// 1.x's per-service status (`status.services` in v1alpha1, `status.components` in v1beta1, 1.0
/// and 1.2 on; `dynamographdeployment_types.go`): by service name, its workload kind and name
/// and replica counts.
pub fn workloads_status(workloads: &[Workload]) -> Value {
    let entries: Map<String, Value> = workloads
        .iter()
        .map(|w| {
            let [replicas, updated, ready, available] = w.replicas;
            (
                w.service.clone(),
                json!({
                    "componentKind": "Deployment",
                    "componentName": w.name,
                    "componentNames": [w.name],
                    "replicas": replicas,
                    "updatedReplicas": updated,
                    "readyReplicas": ready,
                    "availableReplicas": available,
                }),
            )
        })
        .collect();
    Value::Object(entries)
}

/// One DynamoComponentDeployment per service of `graph`, ready to apply.
pub fn components(graph: &DynamoGraphDeployment) -> Result<Vec<Value>, OperatorError> {
    let name = graph.metadata.name.clone().unwrap_or_default();
    let namespace = graph.metadata.namespace.clone().unwrap_or_default();
    let invalid = |reason: &str| OperatorError::Invalid {
        object: format!("DynamoGraphDeployment {namespace}/{name}"),
        reason: reason.to_string(),
    };
    let services = &services_of(&graph.spec).map_err(|reason| invalid(&reason))?;
    let dynamo_ns = dynamo_namespace(&name, services)?;
    let graph_envs = graph.spec["envs"].as_array().cloned().unwrap_or_default();
    let uid = graph.metadata.uid.clone().unwrap_or_default();
    let release = super::release_of(graph.metadata.annotations.as_ref());
    let v1 = release.profile().operator_rules == crate::profile::OperatorRules::V1;
    let hash = worker_hash(services).filter(|_| v1);
    services
        .iter()
        .map(|(service, spec)| {
            let worker_hash = hash.as_deref().filter(|_| is_worker(spec));
            let mut spec = spec
                .as_object()
                .cloned()
                .ok_or_else(|| invalid(&format!("service {service} is not an object")))?;
            let mut labels = json!({ COMPONENT_LABEL: service, NAMESPACE_LABEL: dynamo_ns });
            if v1 {
                labels[GRAPH_LABEL] = name.clone().into();
            }
            if let Some(hash) = worker_hash {
                labels[WORKER_HASH_LABEL] = hash.into();
            }
            let mut envs = spec
                .get("envs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for env in &graph_envs {
                if !envs.iter().any(|e| e["name"] == env["name"]) {
                    envs.push(env.clone());
                }
            }
            if !envs.is_empty() {
                spec.insert("envs".into(), Value::Array(envs));
            }
            spec.insert("serviceName".into(), service.clone().into());
            spec.insert("dynamoNamespace".into(), dynamo_ns.clone().into());
            spec.insert("labels".into(), labels.clone());
            if let Some(framework) = graph.spec.get("backendFramework") {
                spec.insert("backendFramework".into(), framework.clone());
            }
            Ok(json!({
                "apiVersion": "nvidia.com/v1alpha1",
                "kind": "DynamoComponentDeployment",
                "metadata": {
                    "name": component_name(&name, service, worker_hash),
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": { super::RELEASE_ANNOTATION: release.to_string() },
                    "ownerReferences": [{
                        "apiVersion": "nvidia.com/v1alpha1",
                        "kind": "DynamoGraphDeployment",
                        "name": name,
                        "uid": uid,
                        "controller": true,
                        "blockOwnerDeletion": true
                    }]
                },
                "spec": Value::Object(spec)
            }))
        })
        .collect()
}

/// The ServiceAccount `<graph>-k8s-service-discovery` and the Role and RoleBinding that let the
/// graph's pods use Kubernetes discovery (1.x): read Endpoints, Pods and EndpointSlices, and
/// manage `DynamoWorkerMetadata` (ai-dynamo/dynamo `deploy/operator/internal/discovery/resource.go`).
pub fn discovery_access(graph: &DynamoGraphDeployment) -> Vec<Value> {
    let name = graph.metadata.name.clone().unwrap_or_default();
    let namespace = graph.metadata.namespace.clone().unwrap_or_default();
    let account = discovery_account(&name);
    let owner = json!([{
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "name": name,
        "uid": graph.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true
    }]);
    let meta =
        |object: &str| json!({ "name": object, "namespace": namespace, "ownerReferences": owner });
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&account)}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(&format!("{account}-role")),
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["nvidia.com"], "resources": ["dynamoworkermetadatas"],
                 "verbs": ["create", "get", "list", "watch", "update", "patch", "delete"]}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(&format!("{account}-binding")),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{account}-role")},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
        }),
    ]
}

/// The ServiceAccount of a graph's pods under Kubernetes discovery.
pub fn discovery_account(graph: &str) -> String {
    format!("{graph}-k8s-service-discovery")
}

/// The graph's status from its components' `(name, available)`: 0.4.1's `state` and `Ready`
/// condition, and the stand-in's `observedGeneration` (the graph's `generation` it was written for).
pub fn status(components: &[(String, bool)], generation: Option<i64>, now: &str) -> Value {
    let waiting: Vec<&str> = components
        .iter()
        .filter(|(_, available)| !available)
        .map(|(name, _)| name.as_str())
        .collect();
    let (state, ready, reason, message) = if waiting.is_empty() && !components.is_empty() {
        (
            "successful",
            "True",
            "all_resources_are_ready",
            "All resources are ready".to_string(),
        )
    } else {
        (
            "pending",
            "False",
            "some_resources_are_not_ready",
            format!("{} resources not ready: {waiting:?}", waiting.len()),
        )
    };
    json!({
        "state": state,
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(yaml: &str) -> DynamoGraphDeployment {
        let mut value: Value = serde_saphyr::from_str(yaml).unwrap();
        value["metadata"]["namespace"] = "dynamo-cloud".into();
        value["metadata"]["uid"] = "u-1".into();
        serde_json::from_value(value).unwrap()
    }

    fn names_of(components: &[Value]) -> Vec<&str> {
        components
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_guides_graph_becomes_three_owned_components() {
        let guide = include_str!("../../../fixtures/guide/disagg-graph.yaml");
        let components = components(&graph(guide)).unwrap();
        let names = names_of(&components);
        assert_eq!(
            names,
            [
                "vllm-v1-disagg-router-frontend",
                "vllm-v1-disagg-router-vllmdecodeworker",
                "vllm-v1-disagg-router-vllmprefillworker"
            ]
        );
        let decode = &components[1];
        assert_eq!(
            decode["metadata"]["labels"][COMPONENT_LABEL],
            "VllmDecodeWorker"
        );
        assert_eq!(decode["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(decode["spec"]["serviceName"], "VllmDecodeWorker");
        assert_eq!(decode["spec"]["dynamoNamespace"], "vllm-v1-disagg-router");
        assert_eq!(decode["spec"]["envFromSecret"], "hf-token-secret");
    }

    #[test]
    fn under_1x_workers_are_named_with_one_hash_of_their_specs() {
        let guide = include_str!("../../../fixtures/guide/disagg-graph.yaml");
        let mut g = graph(guide);
        g.metadata.annotations = Some(
            [(
                super::super::RELEASE_ANNOTATION.to_string(),
                "1.6.1".to_string(),
            )]
            .into(),
        );
        let components = components(&g).unwrap();
        let services = services_of(&g.spec).unwrap();
        let hash = worker_hash(&services).unwrap();
        assert_eq!(hash.len(), 8);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let names = names_of(&components);
        assert_eq!(
            names,
            [
                "vllm-v1-disagg-router-frontend".to_string(),
                format!("vllm-v1-disagg-router-vllmdecodeworker-{hash}"),
                format!("vllm-v1-disagg-router-vllmprefillworker-{hash}")
            ]
        );
        let labels = |i: usize| components[i]["metadata"]["labels"].clone();
        assert_eq!(labels(1)[WORKER_HASH_LABEL], hash.as_str());
        assert_eq!(labels(1)[COMPONENT_LABEL], "VllmDecodeWorker");
        assert_eq!(labels(0)[GRAPH_LABEL], "vllm-v1-disagg-router");
        assert!(labels(0).get(WORKER_HASH_LABEL).is_none());
        assert_eq!(components[1]["spec"]["labels"], labels(1));
        // A worker's image renames every worker; its replicas or the frontend's spec do not.
        let mut changed = services.clone();
        changed["VllmPrefillWorker"]["extraPodSpec"]["mainContainer"]["image"] = "other".into();
        assert_ne!(worker_hash(&changed).unwrap(), hash);
        let mut scaled = services.clone();
        scaled["VllmDecodeWorker"]["replicas"] = 0.into();
        scaled["Frontend"]["replicas"] = 2.into();
        assert_eq!(worker_hash(&scaled).unwrap(), hash);
        let frontend_only: Map<String, Value> = services
            .into_iter()
            .filter(|(k, _)| k == "Frontend")
            .collect();
        assert_eq!(worker_hash(&frontend_only), None);
    }

    #[test]
    fn workloads_are_reported_per_service_with_their_replica_counts() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "g-decode-0a1b2c3d"},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}
        }))
        .unwrap();
        let status = workloads_status(&[
            Workload::of("Decode", "g-decode-0a1b2c3d", Some(&deployment)),
            Workload::of("Frontend", "g-frontend", None),
        ]);
        assert_eq!(
            status["Decode"],
            json!({"componentKind": "Deployment", "componentName": "g-decode-0a1b2c3d",
                   "componentNames": ["g-decode-0a1b2c3d"], "replicas": 2, "updatedReplicas": 2,
                   "readyReplicas": 1, "availableReplicas": 1})
        );
        assert_eq!(status["Frontend"]["replicas"], 0);
    }

    #[test]
    fn the_v1beta1_fixture_is_the_guides_graph_in_components() {
        let guide: Value =
            serde_saphyr::from_str(include_str!("../../../fixtures/guide/disagg-graph.yaml"))
                .unwrap();
        let beta: Value = serde_saphyr::from_str(include_str!(
            "../../../fixtures/guide/disagg-graph-v1beta1.yaml"
        ))
        .unwrap();
        assert_eq!(beta["apiVersion"], "nvidia.com/v1beta1");
        let mut expected = services_of(&guide["spec"]).unwrap();
        let converted = services_of(&beta["spec"]).unwrap();
        for (name, service) in &mut expected {
            let service = service.as_object_mut().unwrap();
            // No v1beta1 field holds them; the operator derives the Dynamo namespace.
            service.remove("dynamoNamespace");
            if service["componentType"] == "worker" {
                let role = if name.contains("Prefill") {
                    "prefill"
                } else {
                    "decode"
                };
                service.insert("subComponentType".into(), role.into());
            }
        }
        assert_eq!(
            converted.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (name, service) in &expected {
            assert_eq!(&converted[name], service, "{name}");
        }
    }

    #[test]
    fn patches_change_both_shapes_alike() {
        for fixture in [
            include_str!("../../../fixtures/guide/disagg-graph.yaml"),
            include_str!("../../../fixtures/guide/disagg-graph-v1beta1.yaml"),
        ] {
            let mut graph: Value = serde_saphyr::from_str(fixture).unwrap();
            let image = json!({"image": "elsewhere:1", "env": [{"name": "A", "value": "b"}]});
            let patch = main_container_patch(&graph["spec"], &["Frontend"], &image).unwrap();
            json_patch::merge(&mut graph, &patch);
            let patch = replicas_patch(&graph["spec"], &["VllmDecodeWorker", "Absent"], 0);
            json_patch::merge(&mut graph, &patch);
            let services = services_of(&graph["spec"]).unwrap();
            let main = &services["Frontend"]["extraPodSpec"]["mainContainer"];
            assert_eq!(main["image"], "elsewhere:1", "{}", graph["apiVersion"]);
            // v1beta1 keeps env in the container, read back as the service's envs.
            let env = main["env"]
                .as_array()
                .or(services["Frontend"]["envs"].as_array());
            assert_eq!(env.unwrap()[0]["name"], "A");
            assert_eq!(services["VllmDecodeWorker"]["replicas"], 0);
            assert_eq!(services["VllmPrefillWorker"]["replicas"], 1);
            assert_eq!(services.len(), 3, "{}", graph["apiVersion"]);
            let err = main_container_patch(&graph["spec"], &["Absent"], &image).unwrap_err();
            assert!(err.contains("Absent"), "{err}");
        }
    }

    #[test]
    fn a_graph_of_neither_version_is_refused_naming_both_fields() {
        let err = services_of(&json!({"service": {}})).unwrap_err();
        assert!(
            err.contains("spec.services") && err.contains("spec.components"),
            "{err}"
        );
        let err =
            services_of(&json!({"components": [{"name": "A", "podTemplate": {}}]})).unwrap_err();
        assert!(err.contains("no container named main"), "{err}");
    }

    #[test]
    fn a_graph_without_namespaces_gets_dynamo_prefixed() {
        let g = graph("metadata: {name: g}\nspec: {services: {A: {componentType: frontend}}}\n");
        assert_eq!(
            components(&g).unwrap()[0]["spec"]["dynamoNamespace"],
            "dynamo-g"
        );
    }

    #[test]
    fn disagreeing_namespaces_are_refused() {
        let g = graph(
            "metadata: {name: g}\nspec: {services: {A: {dynamoNamespace: x}, B: {dynamoNamespace: y}}}\n",
        );
        let err = components(&g).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
    }

    #[test]
    fn status_names_the_components_not_ready() {
        let pending = status(&[("a".into(), true), ("b".into(), false)], Some(2), "t");
        assert_eq!(pending["state"], "pending");
        assert_eq!(
            pending["conditions"][0]["message"],
            "1 resources not ready: [\"b\"]"
        );
        let done = status(&[("a".into(), true)], Some(2), "t");
        assert_eq!(done["state"], "successful");
        assert_eq!(done["conditions"][0]["status"], "True");
    }
}
