//! Helm releases, as the guide installs them: `--wait --atomic`, and never over a release the suite did not make.

use std::process::Stdio;

use tokio::process::Command;

use super::StageError;
use crate::cluster::Cluster;

/// One `helm` invocation against the cluster.
pub struct Release<'a> {
    /// The stage it belongs to.
    pub stage: &'static str,
    /// The release name.
    pub name: &'a str,
    /// Where the chart comes from.
    pub chart: &'a super::chart::Source,
    /// The namespace.
    pub namespace: &'a str,
    /// A values file the user gave (`--values`), before the `--set` values.
    pub values: Option<&'a std::path::Path>,
    /// `--set` values.
    pub sets: Vec<String>,
    /// `upgrade --install` (a release the suite owns) rather than install-if-absent.
    pub owned: bool,
}

/// `helm` with the cluster's kubeconfig and context; `None` when the run has no Helm
/// ([`Cluster::helm`]).
pub(crate) fn command(cluster: &Cluster) -> Option<Command> {
    let mut command = Command::new(&cluster.helm.as_ref()?.path);
    command.arg("--kubeconfig").arg(&cluster.kubeconfig);
    if let Some(context) = &cluster.context {
        command.args(["--kube-context", context]);
    }
    Some(command)
}

/// Installs the release with `--wait --atomic`, as the guide does. A release the suite does not
/// own is left as it is when it already exists: the suite never changes what it did not create.
pub async fn install(cluster: &Cluster, release: Release<'_>) -> Result<String, StageError> {
    let input = |reason: String| StageError::Input {
        stage: release.stage,
        reason,
    };
    let helm = || command(cluster).ok_or_else(|| input("no Helm to install the chart with".into()));
    let status = helm()?
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
        .map_err(|e| input(format!("cannot run Helm: {e}")))?;
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
        let out = helm()?
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
    let mut command = helm()?;
    command.args(if release.owned {
        ["upgrade", "--install"].as_slice()
    } else {
        ["install"].as_slice()
    });
    command.arg(release.name);
    command.args(release.chart.helm_args());
    command.args(["--namespace", release.namespace, "--create-namespace"]);
    command.args(["--wait", "--atomic", "--timeout", "5m"]);
    if let Some(values) = release.values {
        command.arg("--values").arg(values);
    }
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
            "helm install {} failed: {last}{}",
            release.name,
            release.chart.hint()
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
        format!(
            "helm installed {} from {}",
            release.name,
            release.chart.describe()
        ),
    );
    Ok(notes.join("; "))
}
