//! Pods as a failure message names them: phase, readiness, each container's waiting or last exit reason, the latest warning.
//!
//! On real kubelets these are the kubelet's own words (`ImagePullBackOff`,
//! `CreateContainerConfigError: secret "hf-token-secret" not found`, `Unhealthy: Readiness probe
//! failed: …`); on the local provider the bridge's annotation adds what it saw of the process.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::wait::latest_warning;

/// One line: `pod NAME PHASE Ready=STATUS`, then each container that is waiting
/// (`main waiting: ImagePullBackOff (Back-off pulling image "…")`), that last exited, or that restarted.
pub fn describe(pod: &Pod) -> String {
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
    let containers = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(container_line)
        .collect::<Vec<_>>();
    if !containers.is_empty() {
        line.push_str(&format!(" ({})", containers.join("; ")));
    }
    if let Some(reason) = status.and_then(|s| s.reason.as_deref()) {
        line.push_str(&format!(
            " [{reason}: {}]",
            status
                .and_then(|s| s.message.as_deref())
                .unwrap_or_default()
        ));
    }
    line
}

/// A container's trouble, if any: waiting, a non-zero exit, or restarts with the last exit.
fn container_line(c: &ContainerStatus) -> Option<String> {
    let state = c.state.clone().unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(w) = state.waiting {
        let reason = w.reason.unwrap_or_default();
        if reason != "ContainerCreating" && reason != "PodInitializing" || w.message.is_some() {
            parts.push(format!(
                "waiting: {reason}{}",
                w.message
                    .map(|m| format!(" ({})", crate::openai::check::excerpt(&m, 200)))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(t) = state.terminated
        && t.exit_code != 0
    {
        parts.push(format!(
            "exited {} ({})",
            t.exit_code,
            t.reason.unwrap_or_default()
        ));
    }
    if c.restart_count > 0 {
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                let said = t
                    .message
                    .as_deref()
                    .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
                    .map(|l| format!(": {}", crate::openai::check::excerpt(l.trim(), 160)))
                    .unwrap_or_default();
                format!(
                    ", last exit {} ({}{said})",
                    t.exit_code,
                    t.reason.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        parts.push(format!("restarted {} times{last}", c.restart_count));
    }
    (!parts.is_empty()).then(|| format!("{} {}", c.name, parts.join(", ")))
}

/// Each pod matching `selector` in `namespace`, described, with its latest warning event.
pub async fn explain(client: &Client, namespace: &str, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = match pods.list(&ListParams::default().labels(selector)).await {
        Ok(list) => list.items,
        Err(e) => return vec![format!("cannot list pods {selector}: {e}")],
    };
    if listed.is_empty() {
        return vec![format!("no pods match {selector}")];
    }
    let mut lines = Vec::new();
    for pod in listed {
        let mut line = describe(&pod);
        if let Some(event) = latest_warning(client, Some(namespace), &pod.name_any()).await {
            line.push_str(&format!("; latest warning: {event}"));
        }
        lines.push(line);
    }
    lines
}

/// The label selector of a workload's pods (`matchLabels` only), e.g. `app=etcd,tier=db`.
pub fn selector_of(match_labels: Option<&std::collections::BTreeMap<String, String>>) -> String {
    match_labels
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn kubelet_reasons_are_named() {
        let pulling = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "etcd", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"bitnami/etcd:3.5.18-debian-12-r5\""}}}]
        }));
        assert_eq!(
            describe(&pulling),
            "pod p Pending Ready=False (etcd waiting: ImagePullBackOff (Back-off pulling image \"bitnami/etcd:3.5.18-debian-12-r5\"))"
        );
        let secret = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"hf-token-secret\" not found"}}}]
        }));
        assert!(
            describe(&secret).contains(
                "main waiting: CreateContainerConfigError (secret \"hf-token-secret\" not found)"
            ),
            "{}",
            describe(&secret)
        );
        let restarted = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "main", "ready": true, "restartCount": 2, "image": "i", "imageID": "",
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}}}]
        }));
        assert_eq!(
            describe(&restarted),
            "pod p Running Ready=True (main restarted 2 times, last exit 137 (Error))"
        );
        let crashed = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 1, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container=main"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "Traceback (most recent call last):\nException: Failed to connect to NATS: Connection refused\n"}}}]
        }));
        assert_eq!(
            describe(&crashed),
            "pod p Running Ready=False (main waiting: CrashLoopBackOff (back-off 10s restarting failed container=main), \
             restarted 1 times, last exit 1 (Error: Exception: Failed to connect to NATS: Connection refused))"
        );
        let creating = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"waiting": {"reason": "ContainerCreating"}}}]
        }));
        assert_eq!(describe(&creating), "pod p Pending Ready=Unknown");
    }

    #[test]
    fn selectors_join_match_labels() {
        let labels = std::collections::BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        assert_eq!(selector_of(Some(&labels)), "a=1,b=2");
        assert_eq!(selector_of(None), "");
    }
}
