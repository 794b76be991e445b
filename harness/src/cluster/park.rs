//! The local cluster's kept graph parked while no run is under way: its components scaled to zero.
//!
//! The guide's graph stays applied between runs so that the next one starts in seconds, but an idle
//! worker is not free: Dynamo 0.4.1's keeps about 70% of a core busy forever (its metrics
//! publisher's timer is never re-armed, a tight loop fixed upstream in ai-dynamo/dynamo#4028). The
//! local cluster's agent parks every graph the suite applied once no run has been under way for
//! [`PARK_AFTER`] ([`crate::ledger::idle`]): each service gets `replicas: 0` and the graph the
//! annotation [`PARKED_ANNOTATION`] saying why. The frontend goes too: with no worker, 0.4.1's
//! `/health` answers 503 and the guide's liveness probe restarts it forever. The next run's graph
//! stage applies the guide's graph again, which brings every component back, and removes the
//! annotation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::k8s::MANAGED_BY_LABEL;
use crate::k8s::kinds::DynamoGraphDeployment;

/// The annotation of a parked graph: when and why its components were scaled to zero.
pub const PARKED_ANNOTATION: &str = "dynamo-conformance/parked";
/// How long no run must be under way before the kept graph is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(60);
/// How often the agent looks.
const POLL: Duration = Duration::from_secs(5);
/// The field manager of the park.
const FIELD_MANAGER: &str = "dynamo-conformance-park";

/// The services of a graph's spec (either version) that still run: `(service, replicas)`.
pub fn running_components(spec: &Value) -> Vec<(String, i64)> {
    crate::operator::graph::services_of(spec)
        .unwrap_or_default()
        .iter()
        .map(|(name, s)| (name.clone(), s["replicas"].as_i64().unwrap_or(1)))
        .filter(|(_, replicas)| *replicas != 0)
        .collect()
}

/// The merge patch that parks `components` of a graph whose spec is `spec`, in the spec's own
/// shape, with the reason.
pub fn park_patch(spec: &Value, components: &[(String, i64)], reason: &str) -> Value {
    let names: Vec<&str> = components.iter().map(|(name, _)| name.as_str()).collect();
    let mut patch = crate::operator::graph::replicas_patch(spec, &names, 0);
    patch["metadata"] = json!({ "annotations": { PARKED_ANNOTATION: reason } });
    patch
}

/// Scales the components of every graph the suite applied (label `app.kubernetes.io/managed-by=
/// dynamo-conformance`) to zero; one line per graph parked. Graphs of others are not touched.
pub async fn park(client: &Client) -> Vec<String> {
    let selector = format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1);
    let graphs = match Api::<DynamoGraphDeployment>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list.items,
        Err(e) => return vec![format!("could not list the graphs to park: {e}")],
    };
    let mut lines = Vec::new();
    for graph in graphs {
        let components = running_components(&graph.spec);
        if components.is_empty() {
            continue;
        }
        let (name, ns) = (graph.name_any(), graph.namespace().unwrap_or_default());
        let reason = format!(
            "components {} scaled to 0 after {} s without a run; the next run brings them back",
            components
                .iter()
                .map(|(n, r)| format!("{n} (was {r})"))
                .collect::<Vec<_>>()
                .join(", "),
            PARK_AFTER.as_secs()
        );
        let api = Api::<DynamoGraphDeployment>::namespaced(client.clone(), &ns);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        lines.push(
            match api
                .patch(
                    &name,
                    &params,
                    &Patch::Merge(park_patch(&graph.spec, &components, &reason)),
                )
                .await
            {
                Ok(_) => format!("parked {ns}/{name}: {reason}"),
                Err(e) => format!("could not park {ns}/{name}: {e}"),
            },
        );
    }
    lines
}

/// One line per graph the suite applied: parked (and why) or how many components run.
pub async fn describe(client: &Client) -> Vec<String> {
    let selector = format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1);
    match Api::<DynamoGraphDeployment>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .map(|g| {
                let name = format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any());
                match g.annotations().get(PARKED_ANNOTATION) {
                    Some(reason) => format!("graph {name}: parked ({reason})"),
                    None => format!(
                        "graph {name}: components running ({}); parked after {} s without a run",
                        running_components(&g.spec)
                            .iter()
                            .map(|(n, r)| format!("{n} ×{r}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        PARK_AFTER.as_secs()
                    ),
                }
            })
            .collect(),
        Err(e) => vec![format!("graphs: could not list them: {e}")],
    }
}

/// Parks the kept graphs once no run has been under way for [`PARK_AFTER`]; runs until dropped.
pub async fn watch(client: Client, cache_dir: PathBuf) {
    let mut idle_since: Option<Instant> = None;
    // Parked once per idle spell: only a run applies graphs, and a run ends the spell.
    let mut parked = false;
    loop {
        tokio::time::sleep(POLL).await;
        match crate::ledger::idle(&cache_dir) {
            Ok(Some(_no_run_may_start)) => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if !parked && since.elapsed() >= PARK_AFTER {
                    let lines = park(&client).await;
                    for line in &lines {
                        eprintln!("agent: {line}");
                    }
                    parked = !lines.iter().any(|l| l.starts_with("could not"));
                }
            }
            Ok(None) => (idle_since, parked) = (None, false),
            Err(e) => eprintln!("agent: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guide_spec() -> Value {
        let graph: Value =
            serde_saphyr::from_str(crate::stages::graph::FIXTURE).expect("the fixture parses");
        graph["spec"].clone()
    }

    #[test]
    fn the_guides_three_components_are_parked_frontend_included() {
        let spec = guide_spec();
        let components = running_components(&spec);
        assert_eq!(
            components,
            [
                ("Frontend".to_string(), 1),
                ("VllmDecodeWorker".to_string(), 1),
                ("VllmPrefillWorker".to_string(), 1)
            ]
        );
        let patch = park_patch(&spec, &components, "idle");
        assert_eq!(patch["metadata"]["annotations"][PARKED_ANNOTATION], "idle");
        assert_eq!(
            patch["spec"]["services"],
            json!({"Frontend": {"replicas": 0}, "VllmDecodeWorker": {"replicas": 0}, "VllmPrefillWorker": {"replicas": 0}})
        );
    }

    #[test]
    fn a_v1beta1_graph_is_parked_in_its_components_list() {
        let graph: Value = serde_saphyr::from_str(crate::stages::graph::FIXTURE_V1BETA1).unwrap();
        let mut spec = graph["spec"].clone();
        let components = running_components(&spec);
        assert_eq!(components.len(), 3);
        let patch = park_patch(&spec, &components, "idle");
        assert_eq!(patch["metadata"]["annotations"][PARKED_ANNOTATION], "idle");
        assert!(patch["spec"]["services"].is_null());
        json_patch::merge(&mut spec, &patch["spec"]);
        assert!(running_components(&spec).is_empty());
        assert_eq!(spec["components"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_parked_graph_has_no_running_components_left() {
        let mut spec = guide_spec();
        for service in ["Frontend", "VllmDecodeWorker", "VllmPrefillWorker"] {
            spec["services"][service]["replicas"] = 0.into();
        }
        assert!(running_components(&spec).is_empty());
    }
}
