//! A failed case's evidence bundle, gathered from the cluster and the case's HTTP exchanges, and the diagnoses it supports.
//!
//! The bundle is a directory `<report>/evidence/<case>` and its `.tar.gz` beside it:
//!
//! | file | what |
//! |---|---|
//! | `failure.txt` | the case's message and the catalog's verdict ([`crate::diagnosis`]) |
//! | `transcript.txt` | each request (line, headers sent, body) and answer (status, headers, body or SSE events with arrival times) |
//! | `repro.sh` | the failing exchanges as `curl` commands through `kubectl port-forward` |
//! | `objects/graphs.yaml`, `objects/components.yaml`, `objects/pods.yaml`, `objects/storageclasses.yaml` | the namespace's DynamoGraphDeployments, DynamoComponentDeployments and pods; the cluster's StorageClasses |
//! | `events.txt` | the namespace's events, warnings first |
//! | `logs/<pod>.<container>.log`, `….previous.log` | each container's current and previous log (last 2000 lines) |
//! | `metrics/<frontend or worker>.txt` | `/metrics` of the frontend and each worker, through the run's port-forwards |
//! | `helm/releases.txt`, `helm/<release>.values.yaml` | the namespace's Helm releases and their values |
//! | `versions.txt` | Kubernetes, the Dynamo release and profile, every image with its digest, the charts |
//!
//! Every value given as secret (the Hugging Face token) is replaced by `<redacted>` in every file
//! before it is written.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::diagnosis::{ContainerState, EventSeen, Evidence};
use crate::openai::probe::{Captured, Exchange, Expectation};
use crate::openai::{Answer, Endpoint};

/// The replacement of a secret value.
pub const REDACTED: &str = "<redacted>";
/// Lines of each log kept.
const LOG_LINES: i64 = 2000;

/// Errors writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A file or the archive could not be written.
    #[error("cannot write the evidence bundle at {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a bundle gathers from; every part is optional but the case and its message.
pub struct Sources<'a> {
    /// The case's name (`guide::api::completion`).
    pub case: &'a str,
    /// Its failure message.
    pub message: &'a str,
    /// Its HTTP exchanges with the frontend or a worker.
    pub exchanges: &'a [Exchange],
    /// The cluster and the namespace of the graph and platform.
    pub cluster: Option<(&'a crate::cluster::Cluster, &'a str)>,
    /// `/metrics` endpoints by name (`frontend`, `decode`, `prefill`).
    pub metrics: Vec<(String, Endpoint)>,
    /// The Dynamo release and the profile judging it.
    pub release: String,
    /// The served model.
    pub model: String,
    /// The frontend Service's name, for `repro.sh`.
    pub frontend_service: String,
    /// Values that must not appear in any file (the Hugging Face token).
    pub secrets: Vec<String>,
}

/// A written bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Its directory.
    pub dir: PathBuf,
    /// `<dir>.tar.gz`.
    pub archive: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
    /// What the diagnosis catalog matched against.
    pub evidence: Evidence,
}

/// The name of the run's own bundle (`evidence/run`), written once per run, passed or not, and on
/// Ctrl-C or SIGTERM before cleanup.
pub const RUN: &str = "run";

/// The bundle directory of `case` under `report_dir`: `evidence/` and the case's name with `::`
/// as `.` (`evidence/guide.api.completion`).
pub fn dir_of(report_dir: &Path, case: &str) -> PathBuf {
    report_dir.join("evidence").join(case.replace("::", "."))
}

/// Replaces every secret in `text` by [`REDACTED`].
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
}

struct Writer<'a> {
    dir: PathBuf,
    secrets: &'a [String],
    files: Vec<String>,
}

impl Writer<'_> {
    fn put(&mut self, name: &str, text: &str) -> Result<(), EvidenceError> {
        let path = self.dir.join(name);
        let write = || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, redact(text, self.secrets))
        };
        write().map_err(|source| EvidenceError::Write {
            path: path.clone(),
            source,
        })?;
        self.files.push(name.to_string());
        Ok(())
    }
}

/// The request an expectation sends to the frontend: `(method, path, body)`.
fn request_of(
    expectation: &Expectation,
    model: &str,
) -> Option<(&'static str, String, Option<String>)> {
    match expectation {
        Expectation::FrontendHealth => Some(("GET", "/health".into(), None)),
        Expectation::Models => Some(("GET", "/v1/models".into(), None)),
        Expectation::Generation(request) => Some((
            "POST",
            request.kind.path().to_string(),
            Some(request.body().to_string()),
        )),
        Expectation::Rejected(malformed, kind, stream) => Some((
            "POST",
            kind.path().to_string(),
            Some(malformed.body(model, *kind, *stream)),
        )),
        Expectation::Worker(_) | Expectation::WorkerInFlight(..) => None,
    }
}

/// The exchanges as text: request, then answer with SSE events and their arrival times.
pub fn transcript(exchanges: &[Exchange], model: &str) -> String {
    let mut out = String::new();
    for (i, exchange) in exchanges.iter().enumerate() {
        let _ = writeln!(out, "### exchange {} ({:?})", i + 1, exchange.expectation);
        if let Some((method, path, body)) = request_of(&exchange.expectation, model) {
            let _ = writeln!(out, "> {method} {path}");
            if let Some(body) = body {
                let _ = writeln!(out, "> Content-Type: application/json\n>\n> {body}");
            }
        }
        match &exchange.captured {
            Captured::Http(Answer::Answered(c)) => {
                let _ = writeln!(
                    out,
                    "< {} ({})\n< Content-Type: {}\n<\n{}",
                    c.status,
                    c.request_line,
                    c.content_type.as_deref().unwrap_or("-"),
                    c.body
                );
            }
            Captured::Stream(Answer::Answered(c)) => {
                let _ = writeln!(
                    out,
                    "< {} ({})\n< Content-Type: {}\n<",
                    c.status,
                    c.request_line,
                    c.content_type.as_deref().unwrap_or("-")
                );
                for e in &c.events {
                    let _ = writeln!(
                        out,
                        "+{:>8.1} ms  event: {}  data: {}",
                        e.at.as_secs_f64() * 1000.0,
                        e.event,
                        e.data
                    );
                }
                if let Some(body) = &c.error_body {
                    let _ = writeln!(out, "{body}");
                }
                let _ = writeln!(out, "(stream ended: {:?})", c.end);
            }
            Captured::Http(Answer::Unanswered(why)) | Captured::Stream(Answer::Unanswered(why)) => {
                let _ = writeln!(out, "< no answer: {why}");
            }
        }
        out.push('\n');
    }
    out
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `repro.sh`: a port-forward to the frontend's Service, then each exchange as `curl`.
pub fn repro(exchanges: &[Exchange], model: &str, namespace: &str, service: &str) -> String {
    let mut out = format!(
        "#!/bin/sh\n# Replays the failing exchanges against the frontend through a port-forward.\nset -eu\n\
         kubectl -n {namespace} port-forward svc/{service} 8000:8000 >/dev/null &\n\
         forward=$!\ntrap 'kill $forward' EXIT\nsleep 2\n"
    );
    for exchange in exchanges {
        let Some((method, path, body)) = request_of(&exchange.expectation, model) else {
            continue;
        };
        match body {
            Some(body) => {
                let _ = writeln!(
                    out,
                    "curl -sS -N -X {method} http://127.0.0.1:8000{path} -H 'Content-Type: application/json' -d {}\necho",
                    shell_quote(&body)
                );
            }
            None => {
                let _ = writeln!(out, "curl -sS http://127.0.0.1:8000{path}\necho");
            }
        }
    }
    out
}

/// What the catalog matches against, from pods and events (logs are added as they are read).
pub fn evidence_of(message: &str, pods: &[Pod], events: &[Event]) -> Evidence {
    let containers = pods
        .iter()
        .flat_map(|pod| {
            pod.status
                .iter()
                .flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                })
                .map(|c| ContainerState {
                    pod: pod.name_any(),
                    image: c.image.clone(),
                    waiting: c.state.as_ref().and_then(|s| s.waiting.as_ref()).map(|w| {
                        (
                            w.reason.clone().unwrap_or_default(),
                            w.message.clone().unwrap_or_default(),
                        )
                    }),
                    last_terminated: c
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                "{} {}",
                                t.reason.clone().unwrap_or_default(),
                                t.message.clone().unwrap_or_default()
                            )
                        }),
                    restarts: c.restart_count,
                })
        })
        .collect();
    // An event about a pod speaks of now only while that pod is not Ready (a liveness failure
    // an hour ago, healed by a restart, is no diagnosis of today's failure).
    let unready: Vec<String> = pods
        .iter()
        .filter(|p| {
            !p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(ResourceExt::name_any)
        .collect();
    let events = events
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() != Some("Pod")
                || e.involved_object
                    .name
                    .as_ref()
                    .is_some_and(|n| unready.contains(n))
        })
        .map(|e| EventSeen {
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            object: e.involved_object.name.clone().unwrap_or_default(),
        })
        .collect();
    Evidence {
        message: message.to_string(),
        containers,
        events,
        logs: Vec::new(),
    }
}

/// Events as lines, warnings first, each group oldest first.
pub fn events_text(events: &[Event]) -> String {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| {
        (
            e.type_.as_deref() != Some("Warning"),
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0)),
        )
    });
    sorted
        .iter()
        .map(|e| {
            format!(
                "{} {} {}/{} ×{}: {}\n",
                e.type_.as_deref().unwrap_or("-"),
                e.reason.as_deref().unwrap_or("-"),
                e.involved_object.kind.as_deref().unwrap_or("-"),
                e.involved_object.name.as_deref().unwrap_or("-"),
                e.count.unwrap_or(1),
                e.message.as_deref().unwrap_or_default().trim_end()
            )
        })
        .collect()
}

fn yaml(items: &[Value]) -> String {
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if let Some(meta) = item["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            format!(
                "---\n{}",
                serde_saphyr::to_string(&item).unwrap_or_default()
            )
        })
        .collect()
}

async fn dynamic_list(client: &Client, ns: &str, kind: &str, plural: &str) -> Vec<Value> {
    let gvk = kube::api::GroupVersionKind::gvk("nvidia.com", "v1alpha1", kind);
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect(),
        Err(e) => vec![serde_json::json!({ "error": format!("list {plural}: {e}") })],
    }
}

async fn helm_text(cluster: &crate::cluster::Cluster, args: &[&str]) -> String {
    let Some(mut command) = crate::stages::helm::command(cluster) else {
        return "no Helm: the run applied nothing, and no Helm was built or named\n".into();
    };
    command.args(args);
    match command.output().await {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("cannot run {:?}: {e}\n", command.as_std().get_program()),
    }
}

/// Gathers a bundle for a failed case into `dir`, writes its `.tar.gz`, and returns it with the
/// evidence the catalog matches against. What cannot be read is written as the reason it could
/// not, in place of the file's content.
///
/// # Errors
/// [`EvidenceError::Write`] when a file or the archive cannot be written.
pub async fn gather(dir: &Path, sources: Sources<'_>) -> Result<Bundle, EvidenceError> {
    let _ = std::fs::remove_dir_all(dir);
    let mut w = Writer {
        dir: dir.to_path_buf(),
        secrets: &sources.secrets,
        files: Vec::new(),
    };
    w.put(
        "transcript.txt",
        &transcript(sources.exchanges, &sources.model),
    )?;
    let ns = sources.cluster.map_or("dynamo-cloud", |(_, ns)| ns);
    w.put(
        "repro.sh",
        &repro(
            sources.exchanges,
            &sources.model,
            ns,
            &sources.frontend_service,
        ),
    )?;
    let mut evidence = Evidence {
        message: sources.message.to_string(),
        ..Evidence::default()
    };
    let mut versions = format!("Dynamo release: {}\n", sources.release);
    if let Some((cluster, ns)) = sources.cluster {
        let client = &cluster.client;
        let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        evidence = evidence_of(sources.message, &pods, &events);
        w.put(
            "objects/pods.yaml",
            &yaml(
                &pods
                    .iter()
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect::<Vec<_>>(),
            ),
        )?;
        w.put(
            "objects/graphs.yaml",
            &yaml(
                &dynamic_list(
                    client,
                    ns,
                    "DynamoGraphDeployment",
                    "dynamographdeployments",
                )
                .await,
            ),
        )?;
        w.put(
            "objects/components.yaml",
            &yaml(
                &dynamic_list(
                    client,
                    ns,
                    "DynamoComponentDeployment",
                    "dynamocomponentdeployments",
                )
                .await,
            ),
        )?;
        w.put("events.txt", &events_text(&events))?;
        let classes: Vec<Value> =
            Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter_map(|c| serde_json::to_value(c).ok())
                        .collect()
                })
                .unwrap_or_default();
        w.put("objects/storageclasses.yaml", &yaml(&classes))?;
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        let _ = writeln!(
            versions,
            "Kubernetes: {} ({} provider)",
            cluster.version,
            cluster.provider.as_str()
        );
        for pod in &pods {
            for c in pod.spec.iter().flat_map(|s| &s.containers) {
                let image_id = pod
                    .status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
                    .find(|s| s.name == c.name)
                    .map(|s| s.image_id.clone())
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| "(no digest reported)".into());
                let _ = writeln!(
                    versions,
                    "image {}/{}: {} {image_id}",
                    pod.name_any(),
                    c.name,
                    c.image.as_deref().unwrap_or("-")
                );
                for previous in [false, true] {
                    let params = LogParams {
                        container: Some(c.name.clone()),
                        previous,
                        tail_lines: Some(LOG_LINES),
                        ..LogParams::default()
                    };
                    let text = match api.logs(&pod.name_any(), &params).await {
                        Ok(text) => text,
                        Err(e) if previous => format!("(no previous log: {e})\n"),
                        Err(e) => format!("(no log: {e})\n"),
                    };
                    if !previous || !text.starts_with("(no previous log") {
                        evidence
                            .logs
                            .push((pod.name_any(), redact(&text, &sources.secrets)));
                    }
                    let suffix = if previous { ".previous" } else { "" };
                    w.put(
                        &format!("logs/{}.{}{suffix}.log", pod.name_any(), c.name),
                        &text,
                    )?;
                }
            }
        }
        let releases = helm_text(cluster, &["list", "--namespace", ns]).await;
        w.put("helm/releases.txt", &releases)?;
        for release in releases
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
        {
            let values = helm_text(
                cluster,
                &[
                    "get",
                    "values",
                    release,
                    "--all",
                    "--namespace",
                    ns,
                    "-o",
                    "yaml",
                ],
            )
            .await;
            w.put(&format!("helm/{release}.values.yaml"), &values)?;
        }
        let _ = writeln!(versions, "charts:\n{releases}");
    }
    for (name, endpoint) in &sources.metrics {
        let text = match endpoint.get("/metrics").await {
            Answer::Answered(c) => format!("# status {}\n{}", c.status, c.body),
            Answer::Unanswered(why) => format!("(no answer: {why})\n"),
        };
        w.put(&format!("metrics/{name}.txt"), &text)?;
    }
    w.put("versions.txt", &versions)?;
    let matched = crate::diagnosis::diagnose(&evidence);
    w.put(
        "failure.txt",
        &format!(
            "{}\n{}\n",
            sources.message,
            crate::diagnosis::verdict(&matched)
        ),
    )?;
    let archive = dir.with_file_name(format!(
        "{}.tar.gz",
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    archive_dir(dir, &archive).map_err(|source| EvidenceError::Write {
        path: archive.clone(),
        source,
    })?;
    crate::ledger::record_file(dir);
    crate::ledger::record_file(&archive);
    Ok(Bundle {
        dir: dir.to_path_buf(),
        archive,
        files: w.files,
        evidence,
    })
}

fn archive_dir(dir: &Path, archive: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(archive)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let name = dir.file_name().unwrap_or_default();
    tar.append_dir_all(name, dir)?;
    tar.into_inner()?.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_everywhere_and_short_values_left_alone() {
        let secrets = vec!["hf_abcdefSECRET".to_string(), "ab".to_string()];
        assert_eq!(
            redact("HF_TOKEN=hf_abcdefSECRET ab hf_abcdefSECRET", &secrets),
            format!("HF_TOKEN={REDACTED} ab {REDACTED}")
        );
    }

    #[test]
    fn a_case_bundle_lives_under_the_report_directory() {
        assert_eq!(
            dir_of(Path::new("r"), "guide::api::completion"),
            Path::new("r/evidence/guide.api.completion")
        );
    }

    #[test]
    fn only_events_of_pods_not_ready_now_count() {
        let pod = |name: &str, ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        let event = |object: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": object}, "type": "Warning", "reason": "Unhealthy",
                "message": "Liveness probe failed", "involvedObject": {"kind": "Pod", "name": object}
            }))
            .unwrap()
        };
        let pods = [pod("healed", "True"), pod("failing", "False")];
        let events = [event("healed"), event("failing"), event("gone")];
        let seen = evidence_of("m", &pods, &events);
        let objects: Vec<&str> = seen.events.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(objects, ["failing"]);
    }

    #[test]
    fn warnings_come_first() {
        let event = |type_: &str, reason: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": reason}, "type": type_, "reason": reason,
                "message": "m", "involvedObject": {"kind": "Pod", "name": "p"}
            }))
            .unwrap()
        };
        let text = events_text(&[event("Normal", "Scheduled"), event("Warning", "BackOff")]);
        assert!(text.starts_with("Warning BackOff Pod/p ×1: m\n"), "{text}");
    }
}
