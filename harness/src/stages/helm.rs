//! Helm, as the guide uses it on a real cluster: install a chart unless its release already exists.

use std::process::Stdio;

use tokio::process::Command;

use super::StageError;

/// Where the guide's charts come from.
pub const NGC_CHARTS: &str = "https://helm.ngc.nvidia.com/nvidia/ai-dynamo/charts";

/// `helm install RELEASE CHART --namespace NS --create-namespace --wait --atomic [SETS]`, skipped when
/// the release exists (the suite never changes a release it did not install).
pub async fn install(
    stage: &'static str,
    release: &str,
    chart: &str,
    namespace: &str,
    sets: &[String],
) -> Result<String, StageError> {
    let input = |reason: String| StageError::Input { stage, reason };
    let status = Command::new("helm")
        .args(["status", release, "--namespace", namespace])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(|e| {
            input(format!(
                "helm not found ({e}); install helm 3 to run the guide's chart steps"
            ))
        })?;
    if status.success() {
        return Ok(format!(
            "helm release {release} already installed; left as it is"
        ));
    }
    let mut command = Command::new("helm");
    command.args([
        "install",
        release,
        chart,
        "--namespace",
        namespace,
        "--create-namespace",
        "--wait",
        "--atomic",
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command
        .output()
        .await
        .map_err(|e| input(format!("cannot run helm: {e}")))?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        return Err(input(format!(
            "helm install {release} failed: {}",
            text.lines().last().unwrap_or_default()
        )));
    }
    Ok(format!("helm installed {release} from {chart}"))
}
