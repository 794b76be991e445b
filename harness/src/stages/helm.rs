//! Helm, as the guide uses it: the NGC charts on a real cluster, the project's stand-in charts on `local`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::StageError;
use crate::cluster::Cluster;

/// Where the guide's charts come from.
pub const NGC_CHARTS: &str = "https://helm.ngc.nvidia.com/nvidia/ai-dynamo/charts";

/// A chart of the project's own, embedded so the binary needs no checkout.
pub struct LocalChart {
    /// The chart's name.
    pub name: &'static str,
    /// Its files, by path inside the chart.
    pub files: &'static [(&'static str, &'static str)],
}

/// The stand-in for `dynamo-crds`.
pub const CRDS_CHART: LocalChart = LocalChart {
    name: "dynamo-crds",
    files: &[
        (
            "Chart.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-crds/Chart.yaml"),
        ),
        (
            "values.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-crds/values.yaml"),
        ),
        (
            "templates/crds.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-crds/templates/crds.yaml"),
        ),
    ],
};

/// The stand-in for `dynamo-platform`.
pub const PLATFORM_CHART: LocalChart = LocalChart {
    name: "dynamo-platform",
    files: &[
        (
            "Chart.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-platform/Chart.yaml"),
        ),
        (
            "values.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-platform/values.yaml"),
        ),
        (
            "templates/platform.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-platform/templates/platform.yaml"),
        ),
    ],
};

impl LocalChart {
    /// Writes the chart under `cache_dir/charts` and returns its directory.
    pub fn materialize(
        &self,
        cache_dir: &Path,
        stage: &'static str,
    ) -> Result<PathBuf, StageError> {
        let dir = cache_dir.join("charts").join(self.name);
        for (path, text) in self.files {
            let file = dir.join(path);
            let written = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&file, text));
            written.map_err(|e| StageError::Input {
                stage,
                reason: format!("cannot write {}: {e}", file.display()),
            })?;
        }
        Ok(dir)
    }
}

/// One `helm` invocation against the cluster.
pub struct Release<'a> {
    /// The stage it belongs to.
    pub stage: &'static str,
    /// The release name.
    pub name: &'a str,
    /// A chart URL or directory.
    pub chart: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// `--set` values.
    pub sets: Vec<String>,
    /// `upgrade --install` (a release the suite owns) rather than install-if-absent.
    pub owned: bool,
}

/// `helm` with the cluster's kubeconfig and context.
pub(crate) fn command(cluster: &Cluster) -> Command {
    let mut command = Command::new(&cluster.helm);
    command.arg("--kubeconfig").arg(&cluster.kubeconfig);
    if let Some(context) = &cluster.context {
        command.args(["--kube-context", context]);
    }
    command
}

/// Installs the release with `--wait --atomic`, as the guide does. A release the suite does not
/// own is left as it is when it already exists: the suite never changes what it did not create.
pub async fn install(cluster: &Cluster, release: Release<'_>) -> Result<String, StageError> {
    let input = |reason: String| StageError::Input {
        stage: release.stage,
        reason,
    };
    let status = command(cluster)
        .args([
            "status",
            release.name,
            "--namespace",
            release.namespace,
            "--output",
            "json",
        ])
        .stderr(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            input(format!(
                "cannot run helm ({}): {e}; install Helm 3",
                cluster.helm.display()
            ))
        })?;
    let exists = status.status.success();
    let state = serde_json::from_slice::<serde_json::Value>(&status.stdout)
        .ok()
        .and_then(|v| v["info"]["status"].as_str().map(String::from))
        .unwrap_or_default();
    if exists && !release.owned {
        return Ok(format!(
            "helm release {} already installed ({state}); left as it is",
            release.name
        ));
    }
    let namespace_existed =
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client.clone())
            .get_metadata_opt(release.namespace)
            .await
            .map(|n| n.is_some())
            .unwrap_or(true);
    let mut notes = Vec::new();
    if exists && state.starts_with("pending-") {
        // An interrupted run left helm's own lock (the release's status) behind. The stage lock
        // says no run of the suite is on it now, and the release is the suite's: take it back.
        let out = command(cluster)
            .args(["uninstall", release.name, "--namespace", release.namespace])
            .args(["--wait", "--timeout", "3m"])
            .output()
            .await
            .map_err(|e| input(format!("cannot run helm: {e}")))?;
        if !out.status.success() {
            return Err(input(format!(
                "helm release {} is stuck {state} and could not be uninstalled: {}",
                release.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        notes.push(format!(
            "the release was left {state} by an interrupted run; uninstalled and installed again"
        ));
    }
    let mut command = command(cluster);
    command.args(if release.owned {
        ["upgrade", "--install"].as_slice()
    } else {
        ["install"].as_slice()
    });
    command.args([
        release.name,
        release.chart,
        "--namespace",
        release.namespace,
        "--create-namespace",
    ]);
    command.args(["--wait", "--atomic", "--timeout", "5m"]);
    for set in &release.sets {
        command.args(["--set", set]);
    }
    let output = command
        .output()
        .await
        .map_err(|e| input(format!("cannot run helm: {e}")))?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default();
        return Err(input(format!(
            "helm install {} failed: {last}",
            release.name
        )));
    }
    if !namespace_existed {
        crate::ledger::record_apply(
            false,
            release.stage,
            "v1",
            "Namespace",
            None,
            release.namespace,
        );
    }
    crate::ledger::record_apply(
        exists,
        release.stage,
        crate::cleanup::HELM,
        crate::cleanup::HELM_RELEASE,
        Some(release.namespace),
        release.name,
    );
    notes.insert(
        0,
        format!("helm installed {} from {}", release.name, release.chart),
    );
    Ok(notes.join("; "))
}
