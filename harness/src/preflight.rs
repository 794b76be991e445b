//! The preflight: every image the guide's manifests and charts will ask for, and which nodes hold it.
//!
//! Read before anything is applied, from what the stages would apply: the provisioner manifest
//! (its deployment and the helper pod in its ConfigMap), the two charts rendered by `helm
//! template` with the stages' own values, and the graph. A node's images are its
//! `status.images`, which the kubelet caps at 50 (`--node-status-max-images`), so an image a node
//! does not list is only known absent when the node lists fewer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::stages::chart::{self, Chart};
use crate::stages::{graph, platform, storage};

/// How many images a kubelet lists in `status.images` by default (`--node-status-max-images`).
pub const NODE_STATUS_MAX_IMAGES: usize = 50;

/// One image the guide's steps will ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// The reference as the manifests name it, e.g. `nats:2.10.21-alpine`.
    pub image: String,
    /// What asks for it, e.g. `chart dynamo-platform`.
    pub asked_by: Vec<String>,
    /// The nodes that list it.
    pub on: Vec<String>,
}

/// The preflight's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Every image, sorted by reference.
    pub images: Vec<Needed>,
    /// The nodes by name, with whether each lists as many images as a kubelet reports (so that
    /// an image it does not list may still be there).
    pub nodes: Vec<(String, bool)>,
    /// Sources that could not be read, each with why: the list is incomplete by them.
    pub gaps: Vec<String>,
}

impl Preflight {
    /// The list as printed: one line an image (reference, which nodes hold it, what asks for
    /// it), then the gaps.
    pub fn render(&self) -> String {
        let width = self.images.iter().map(|n| n.image.len()).max().unwrap_or(0);
        let presences: Vec<String> = self.images.iter().map(|n| self.presence(n)).collect();
        let room = presences.iter().map(String::len).max().unwrap_or(0);
        let mut out = format!(
            "preflight: {} images the guide's steps will ask for; {} nodes\n",
            self.images.len(),
            self.nodes.len()
        );
        for (needed, presence) in self.images.iter().zip(&presences) {
            out.push_str(&format!(
                "  {:<width$}  {presence:<room$}  {}\n",
                needed.image,
                needed.asked_by.join(", ")
            ));
        }
        for gap in &self.gaps {
            out.push_str(&format!("  not listed: {gap}\n"));
        }
        out
    }

    /// Where the image is, in a few words: `on every node (3)`, `on 2 of 3 nodes (not on a)`, …
    pub fn presence(&self, needed: &Needed) -> String {
        let total = self.nodes.len();
        let capped = self
            .nodes
            .iter()
            .any(|(name, full)| *full && !needed.on.contains(name));
        match needed.on.len() {
            _ if total == 0 => "no node to hold it".into(),
            n if n == total => format!("on every node ({n})"),
            0 if capped => "on no node that lists it".into(),
            0 => "on no node".into(),
            n => {
                let without: Vec<&str> = self
                    .nodes
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .filter(|name| !needed.on.iter().any(|o| o == name))
                    .collect();
                format!("on {n} of {total} nodes (not on {})", without.join(", "))
            }
        }
    }
}

/// Reads every source the stages would apply and the nodes' images. Nothing is applied.
pub async fn run(cluster: &Cluster, config: &Config) -> Preflight {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut note = |image: String, by: &str| {
        let askers = found.entry(image).or_default();
        if !askers.iter().any(|a| a == by) {
            askers.push(by.to_string());
        }
    };
    match storage::provisioner_manifest(cluster, config).await {
        Ok((text, _)) => match images_in_yaml(&text) {
            Ok(images) => images
                .into_iter()
                .for_each(|i| note(i, "the provisioner manifest")),
            Err(e) => gaps.push(format!("the provisioner manifest: {e}")),
        },
        Err(e) => gaps.push(e.to_string()),
    }
    for chart in [Chart::Crds, Chart::Platform] {
        let by = format!("chart {}", chart.name());
        match rendered(cluster, config, chart).await {
            Ok(text) => match images_in_yaml(&text) {
                Ok(images) => images.into_iter().for_each(|i| note(i, &by)),
                Err(e) => gaps.push(format!("{by}: {e}")),
            },
            Err(e) => gaps.push(format!("{by}: {e}")),
        }
    }
    match graph::manifest(config) {
        Ok(graph) => {
            let mut images = Vec::new();
            collect(&graph, &mut images);
            images
                .into_iter()
                .for_each(|i| note(i, "the graph (DynamoGraphDeployment)"));
        }
        Err(e) => gaps.push(format!("the graph: {e}")),
    }
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let (listed, node_names) = match nodes.list(&ListParams::default()).await {
        Ok(list) => {
            let mut listed = BTreeMap::new();
            let mut names = Vec::new();
            for node in list.items {
                let name = node.metadata.name.clone().unwrap_or_default();
                let images: Vec<String> = node
                    .status
                    .and_then(|s| s.images)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|i| i.names.unwrap_or_default())
                    .map(|n| normalize(&n))
                    .collect();
                names.push((name.clone(), images.len() >= NODE_STATUS_MAX_IMAGES));
                listed.insert(name, images);
            }
            (listed, names)
        }
        Err(e) => {
            gaps.push(format!("the nodes' images (cannot list nodes: {e})"));
            (BTreeMap::new(), Vec::new())
        }
    };
    let images = found
        .into_iter()
        .map(|(image, asked_by)| {
            let wanted = normalize(&image);
            let on = listed
                .iter()
                .filter(|(_, images)| images.contains(&wanted))
                .map(|(node, _)| node.clone())
                .collect();
            Needed {
                image,
                asked_by,
                on,
            }
        })
        .collect();
    Preflight {
        images,
        nodes: node_names,
        gaps,
    }
}

/// `helm template` of `chart` as the stage would install it.
async fn rendered(cluster: &Cluster, config: &Config, chart: Chart) -> Result<String, String> {
    let source = chart::source(chart, config, cluster.offline()).map_err(|e| e.to_string())?;
    if source.is_stand_in() {
        chart
            .stand_in()
            .materialize(&config.cache_dir, "preflight")
            .map_err(|e| e.to_string())?;
    }
    let Some(mut helm) = crate::stages::helm::command(cluster) else {
        return Err("no Helm to render it with".into());
    };
    helm.args(["template", chart.name()]);
    helm.args(source.helm_args());
    helm.args(["--namespace", &config.namespace]);
    if chart == Chart::Platform {
        let values =
            platform::values(cluster, config, source.is_stand_in()).map_err(|e| e.to_string())?;
        if let Some(file) = &values.file {
            helm.arg("--values").arg(&file.path);
        }
        for set in &values.sets {
            helm.args(["--set", set]);
        }
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), helm.output())
        .await
        .map_err(|_| format!("helm template {} took over 120 s", source.describe()))?
        .map_err(|e| format!("cannot run Helm: {e}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "helm template {} failed: {}{}",
            source.describe(),
            text.lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or_default(),
            source.hint()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every `image` in a multi-document YAML text, including pod specs held as text in a
/// ConfigMap's data (the provisioner's helper pod).
pub fn images_in_yaml(text: &str) -> Result<Vec<String>, String> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?;
    let mut images = Vec::new();
    for document in &documents {
        collect(document, &mut images);
        if document["kind"] == "ConfigMap"
            && let Some(data) = document["data"].as_object()
        {
            for value in data.values().filter_map(Value::as_str) {
                if value.contains("image:")
                    && let Ok(inner) = serde_saphyr::from_multiple::<Value>(value)
                {
                    inner.iter().for_each(|d| collect(d, &mut images));
                }
            }
        }
    }
    images.sort();
    images.dedup();
    Ok(images)
}

/// Every string under a key `image`, anywhere in `value`.
fn collect(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::String(image) if key == "image" && !image.trim().is_empty() => {
                        out.push(image.trim().to_string());
                    }
                    _ => collect(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

/// An image reference as a container runtime names it: a registry first (`docker.io` when
/// none is given, `library/` for an official image), a tag (`latest` when none is given).
pub fn normalize(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    if let Some(digest) = digest {
        full.push('@');
        full.push_str(digest);
    } else if !full.rsplit('/').next().unwrap_or_default().contains(':') {
        full.push_str(":latest");
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_as_a_container_runtime_lists_them() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize("nats:2.10.21-alpine"),
            "docker.io/library/nats:2.10.21-alpine"
        );
        assert_eq!(
            normalize("bitnami/etcd:3.5.18-debian-12-r5"),
            "docker.io/bitnami/etcd:3.5.18-debian-12-r5"
        );
        assert_eq!(
            normalize("nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1"),
            "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1"
        );
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(normalize("a/b@sha256:00"), "docker.io/a/b@sha256:00");
    }

    #[test]
    fn the_provisioner_manifest_asks_for_its_image_and_its_helper_pods() {
        let text = include_str!("../../fixtures/local/cluster/local-path-storage.yaml");
        let images = images_in_yaml(text).unwrap();
        assert!(
            images
                .iter()
                .any(|i| i.starts_with("rancher/local-path-provisioner:")),
            "{images:?}"
        );
        assert!(
            images.iter().any(|i| i.starts_with("busybox")),
            "{images:?}"
        );
    }

    #[test]
    fn the_guides_graph_asks_for_its_runtime_images_and_the_prefill_skew() {
        let config = crate::config::Config::resolve(Default::default()).unwrap();
        let mut images = Vec::new();
        collect(&graph::manifest(&config).unwrap(), &mut images);
        images.sort();
        images.dedup();
        assert_eq!(
            images,
            [
                "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.0",
                "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1"
            ]
        );
    }

    #[test]
    fn presence_says_where_an_image_is_and_when_a_node_may_not_say() {
        let preflight = Preflight {
            images: Vec::new(),
            nodes: vec![("a".into(), false), ("b".into(), true)],
            gaps: Vec::new(),
        };
        let needed = |on: &[&str]| Needed {
            image: "x".into(),
            asked_by: vec!["y".into()],
            on: on.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            preflight.presence(&needed(&["a", "b"])),
            "on every node (2)"
        );
        assert_eq!(
            preflight.presence(&needed(&["a"])),
            "on 1 of 2 nodes (not on b)"
        );
        assert_eq!(preflight.presence(&needed(&[])), "on no node that lists it");
    }
}
