//! The guide's DynamoGraphDeployment, applied with the run's model and release, and waited for until ready.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::{Stage, StageError};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::k8s::kinds::{DynamoComponentDeployment, DynamoGraphDeployment, conditions};
use crate::k8s::{K8sError, MANAGED_BY_LABEL, apply, wait};
use crate::operator::component::SELECTOR_LABEL;

/// The guide's graph, as the guide writes it.
pub const FIXTURE: &str = include_str!("../../../fixtures/guide/disagg-graph.yaml");
/// Its name.
pub const GRAPH: &str = "vllm-v1-disagg-router";
/// The model and release the guide's graph names, replaced by the run's.
const GUIDE_MODEL: &str = "Qwen/Qwen3-0.6B";
const GUIDE_IMAGE: &str = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1";
/// The state a ready graph reports (0.4.1 and 1.x alike).
pub const READY_STATE: &str = "successful";

/// The guide's graph with the run's model and, where the guide names its release (0.4.1), the
/// run's release as image tag. Other tags (the prefill worker's 0.4.0) stay as the guide has them.
pub fn manifest(config: &Config) -> Result<Value, K8sError> {
    let image = format!(
        "nvcr.io/nvidia/ai-dynamo/vllm-runtime:{}",
        config.dynamo_version
    );
    let text = FIXTURE
        .replace(GUIDE_IMAGE, &image)
        .replace(GUIDE_MODEL, &config.model);
    let mut objects = apply::parse_documents("guide/disagg-graph.yaml", &text)?;
    let mut graph = objects.remove(0);
    graph["metadata"]["annotations"][crate::bridge::pod::VERSION_ANNOTATION] =
        config.dynamo_version.as_str().into();
    Ok(graph)
}

/// Whether the graph reports the ready state and a `Ready` condition.
pub fn is_ready(graph: Option<&DynamoGraphDeployment>) -> bool {
    graph.and_then(|g| g.status.as_ref()).is_some_and(|s| {
        s["state"] == READY_STATE
            && conditions(Some(s))
                .iter()
                .any(|(t, st, _, _)| t == "Ready" && st == "True")
    })
}

/// The graph's state and `Ready` condition, one line.
pub fn describe(graph: Option<&DynamoGraphDeployment>) -> String {
    let Some(status) = graph.and_then(|g| g.status.as_ref()) else {
        return "no status yet (is the operator running?)".into();
    };
    let conditions: Vec<String> = conditions(Some(status))
        .into_iter()
        .map(|(t, s, r, m)| format!("{t}={s} ({r}: {m})"))
        .collect();
    format!(
        "state {:?}, {}",
        status["state"].as_str().unwrap_or("none"),
        conditions.join("; ")
    )
}

/// For each component that is not available: its pods and why they are not ready.
pub async fn pending_components(client: &Client, namespace: &str, graph: &str) -> Vec<String> {
    let dcds: Api<DynamoComponentDeployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = dcds.list(&ListParams::default()).await else {
        return vec!["cannot list DynamoComponentDeployments".into()];
    };
    let mut out = Vec::new();
    for dcd in list.items.into_iter().filter(|d| {
        d.owner_references().iter().any(|o| o.name == graph)
            && !crate::k8s::kinds::condition_true(d.status.as_ref(), "Available")
    }) {
        let name = dcd.name_any();
        let selector = format!("{SELECTOR_LABEL}={name}");
        let pod_lines: Vec<String> = match pods.list(&ListParams::default().labels(&selector)).await
        {
            Err(e) => vec![format!("cannot list its pods: {e}")],
            Ok(p) if p.items.is_empty() => vec!["no pods".into()],
            Ok(p) => p.items.iter().map(pod_summary).collect(),
        };
        let mut line = format!("component {name} not available: {}", pod_lines.join("; "));
        if let Some(event) = wait::latest_warning(client, Some(namespace), &name).await {
            line.push_str(&format!("; latest warning: {event}"));
        }
        out.push(line);
    }
    out
}

/// A pod's phase, readiness and, on the local provider, what the bridge last saw of its process.
pub fn pod_summary(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into());
    let mut line = format!(
        "pod {} {} Ready={ready}",
        pod.name_any(),
        status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into())
    );
    if let Some(process) = pod.annotations().get(crate::bridge::pod::STATUS_ANNOTATION) {
        line.push_str(&format!(" ({process})"));
    }
    line
}

/// Deletes the suite's graph (and, through owner references, its components and pods) and waits until it is gone.
async fn replace(
    api: &Api<DynamoGraphDeployment>,
    graph: &DynamoGraphDeployment,
    ns: &str,
    config: &Config,
) -> Result<(), K8sError> {
    let uid = graph.uid().unwrap_or_default();
    api.delete(GRAPH, &kube::api::DeleteParams::foreground())
        .await
        .map_err(|e| K8sError::api(format!("delete DynamoGraphDeployment {ns}/{GRAPH}"), e))?;
    let gone = kube::runtime::conditions::is_deleted(&uid);
    match tokio::time::timeout(
        config.ready_timeout,
        kube::runtime::wait::await_condition(api.clone(), GRAPH, gone),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(K8sError::Timeout {
            what: format!("DynamoGraphDeployment {ns}/{GRAPH}"),
            condition: "deleted".into(),
            waited: config.ready_timeout,
            last_seen: format!("the watch failed: {e}"),
        }),
        Err(_) => Err(K8sError::Timeout {
            what: format!("DynamoGraphDeployment {ns}/{GRAPH}"),
            condition: "deleted".into(),
            waited: config.ready_timeout,
            last_seen: "still there (foreground deletion waits for its components and pods)".into(),
        }),
    }
}

/// Waits until every pod of the graph's components is Ready.
async fn pods_ready(client: &Client, ns: &str, config: &Config) -> Result<(), K8sError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let listed = pods
        .list(&ListParams::default().labels(crate::operator::component::TYPE_LABEL))
        .await
        .map_err(|e| K8sError::api(format!("list the pods of {GRAPH}"), e))?;
    for pod in listed.items.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.labels()
                .get(SELECTOR_LABEL)
                .is_some_and(|s| s.starts_with(&format!("{GRAPH}-")))
    }) {
        let name = pod.name_any();
        wait::until(
            client,
            wait::Wait {
                api: pods.clone(),
                name: &name,
                namespace: Some(ns),
                condition: "Ready",
                timeout: config.ready_timeout,
            },
            |p: Option<&Pod>| {
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
            |p: Option<&Pod>| p.map(pod_summary).unwrap_or_else(|| "gone".into()),
        )
        .await?;
    }
    Ok(())
}

/// Applies the graph (unless someone else's graph of that name is there) and waits until it is ready.
pub async fn ensure(cluster: &Cluster, config: &Config) -> Result<Vec<String>, StageError> {
    let fail = StageError::cluster(Stage::Graph);
    let ns = config.namespace.as_str();
    let api: Api<DynamoGraphDeployment> = Api::namespaced(cluster.client.clone(), ns);
    let existing = api.get_opt(GRAPH).await.map_err(|e| {
        fail(K8sError::api(
            format!("read DynamoGraphDeployment {ns}/{GRAPH}"),
            e,
        ))
    })?;
    let foreign = existing.as_ref().is_some_and(|g| {
        g.labels().get(MANAGED_BY_LABEL.0).map(String::as_str) != Some(MANAGED_BY_LABEL.1)
    });
    let mut notes = Vec::new();
    let other_release = existing
        .as_ref()
        .and_then(|g| {
            g.annotations()
                .get(crate::bridge::pod::VERSION_ANNOTATION)
                .cloned()
        })
        .filter(|v| !foreign && v != config.dynamo_version.as_str());
    if let (Some(old), Some(graph)) = (&other_release, &existing) {
        // Pod templates that do not name the release (the guide's 0.4.0 prefill image) would not
        // roll, so a graph of another release is replaced rather than updated.
        replace(&api, graph, ns, config).await.map_err(&fail)?;
        notes.push(format!("replaced the graph of Dynamo {old}"));
    }
    if foreign {
        notes.push(format!(
            "DynamoGraphDeployment {ns}/{GRAPH} was there already and is used as is"
        ));
    } else {
        let graph = manifest(config).map_err(&fail)?;
        apply::apply_objects(
            &cluster.client,
            "guide/disagg-graph.yaml",
            vec![graph],
            ns,
            Stage::Graph.name(),
        )
        .await
        .map_err(&fail)?;
        notes.push(format!(
            "applied the guide's DynamoGraphDeployment {GRAPH} (model {}, image tag {} where the guide has 0.4.1)",
            config.model, config.dynamo_version
        ));
    }
    let waited = wait::until(
        &cluster.client,
        wait::Wait {
            api,
            name: GRAPH,
            namespace: Some(ns),
            condition: "ready",
            timeout: config.ready_timeout,
        },
        |g: Option<&DynamoGraphDeployment>| is_ready(g),
        describe,
    )
    .await;
    match waited {
        Ok(_) => {
            // The graph's status trails its pods: the pods themselves must be Ready too.
            pods_ready(&cluster.client, ns, config)
                .await
                .map_err(&fail)?;
            Ok(notes)
        }
        Err(K8sError::Timeout {
            what,
            condition,
            waited,
            mut last_seen,
        }) => {
            let pending = pending_components(&cluster.client, ns, GRAPH).await;
            if !pending.is_empty() {
                last_seen.push_str(&format!("; {}", pending.join("; ")));
            }
            Err(fail(K8sError::Timeout {
                what,
                condition,
                waited,
                last_seen,
            }))
        }
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    fn config(version: &str, model: &str) -> Config {
        Config::resolve(ConfigLayer {
            dynamo_version: Some(version.into()),
            model: Some(model.into()),
            ..ConfigLayer::default()
        })
        .unwrap()
    }

    fn images(graph: &Value) -> Vec<(String, String)> {
        graph["spec"]["services"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let image = v["extraPodSpec"]["mainContainer"]["image"]
                    .as_str()
                    .unwrap();
                (k.clone(), image.rsplit_once(':').unwrap().1.to_string())
            })
            .collect()
    }

    #[test]
    fn the_guides_release_becomes_the_runs_and_its_skew_stays() {
        let graph = manifest(&config("1.6.1", "Qwen/Qwen3-0.6B")).unwrap();
        assert_eq!(
            images(&graph),
            [
                ("Frontend".to_string(), "1.6.1".to_string()),
                ("VllmDecodeWorker".to_string(), "1.6.1".to_string()),
                ("VllmPrefillWorker".to_string(), "0.4.0".to_string()),
            ]
        );
        assert_eq!(
            graph["metadata"]["annotations"][crate::bridge::pod::VERSION_ANNOTATION],
            "1.6.1"
        );
    }

    #[test]
    fn the_model_is_a_parameter() {
        let graph = manifest(&config("0.4.1", "my/model")).unwrap();
        let args =
            graph["spec"]["services"]["VllmDecodeWorker"]["extraPodSpec"]["mainContainer"]["args"]
                [0]
            .as_str()
            .unwrap();
        assert!(args.contains("--model my/model"), "{args}");
    }

    #[test]
    fn ready_needs_the_state_and_the_condition() {
        let graph = |status: Value| -> DynamoGraphDeployment {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "g"}, "status": status}))
                .unwrap()
        };
        let ready = graph(
            serde_json::json!({"state": "successful", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        let pending = graph(
            serde_json::json!({"state": "pending", "conditions": [{"type": "Ready", "status": "False", "reason": "some_resources_are_not_ready", "message": "1 resources not ready: [\"x\"]"}]}),
        );
        assert!(is_ready(Some(&ready)));
        assert!(!is_ready(Some(&pending)));
        assert!(!is_ready(None));
        assert_eq!(
            describe(Some(&pending)),
            "state \"pending\", Ready=False (some_resources_are_not_ready: 1 resources not ready: [\"x\"])"
        );
    }
}
