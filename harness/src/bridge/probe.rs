//! A container's readiness and liveness probes as the kubelet runs them, against the pod's local process.
//!
//! `httpGet` probes are sent to the process's local port. `exec` probes run for real: the
//! command's shell runs with a `PATH` holding only the programs the container's image ships (the
//! host's own `curl`, `jq` and `sh`, linked), with `localhost:<port>` moved to the process's local
//! port. An image built without `jq` (tag suffix [`WITHOUT_JQ`]) therefore fails the guide's
//! frontend probe exactly as in the field: `/bin/sh: 1: jq: not found` (ai-dynamo/dynamo#3726).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe as ProbeSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::debian::Package;
use crate::images::catalog::WITHOUT_JQ;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET http://127.0.0.1:<port><path>`; any status from 200 to 399 passes (the kubelet's rule).
    Http {
        /// The process's local port.
        port: u16,
        /// The path.
        path: String,
    },
    /// The container's command, run with the image's programs only; exit 0 passes.
    Exec {
        /// The command's words, `localhost:<port>` moved to the local port.
        command: Vec<String>,
        /// The image whose programs the command may use.
        image: String,
    },
}

/// A probe with the kubelet's timing (seconds in the spec; Kubernetes' defaults where unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What it does.
    pub action: Action,
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
}

/// The programs a probe's shell may need, from Debian where the host lacks them.
pub const PROGRAMS: &[Package] = &[
    Package {
        program: "curl",
        package: "curl",
    },
    Package {
        program: "jq",
        package: "jq",
    },
];

/// The programs `image` ships for its probes: the runtime images carry `sh`, `curl` and `jq`, the
/// `-nojq` variant (the field failure of ai-dynamo/dynamo#3726) no `jq`.
pub fn programs_of(image: &str) -> Vec<&'static str> {
    let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
    ["sh", "curl", "jq"]
        .into_iter()
        .filter(|p| *p != "jq" || !tag.ends_with(WITHOUT_JQ))
        .collect()
}

/// The directory that stands for `image`'s `PATH` under `bridge_dir`: links to the host's
/// programs that the image ships. Errors: a program the host lacks, or the links not made.
pub fn path_of(bridge_dir: &Path, image: &str) -> Result<PathBuf, String> {
    let name: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = bridge_dir.join("images").join(name).join("bin");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for program in programs_of(image) {
        let link = dir.join(program);
        if link.exists() {
            continue;
        }
        let host = crate::command::locate(program)
            .ok_or_else(|| format!("the host has no {program} to stand for the image's"))?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&host, &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(dir)
}

fn port_of(target: &IntOrString, container: &Container) -> Option<i32> {
    match target {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// Moves each `localhost:<port>` (or `localhost:${VAR}`, `VAR` from `env`) to `127.0.0.1:<local>`.
fn localize(
    word: &str,
    env: &[(String, String)],
    ports: &BTreeMap<i32, u16>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find("localhost:") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "localhost:".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "${}_".contains(c)))
            .unwrap_or(after.len());
        let text = &after[..end];
        let port: i32 = match text.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            Some(var) => env
                .iter()
                .find(|(k, _)| k == var)
                .and_then(|(_, v)| v.parse().ok())
                .ok_or_else(|| format!("its probe's port ${{{var}}} is not a number"))?,
            None => text
                .parse()
                .map_err(|_| format!("its probe names port {text:?}"))?,
        };
        let local = ports.get(&port).ok_or_else(|| {
            format!("its probe targets port {port}, which the container does not serve")
        })?;
        out.push_str(&format!("127.0.0.1:{local}"));
        rest = &after[end..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Probe {
    /// The probe `spec` of `container` (environment `env`, ports moved as `ports` says), or why
    /// it cannot run here (a `grpc` or `tcpSocket` probe, a port the container does not serve).
    pub fn from_spec(
        spec: &ProbeSpec,
        container: &Container,
        env: &[(String, String)],
        ports: &BTreeMap<i32, u16>,
    ) -> Result<Probe, String> {
        let action = if let Some(get) = &spec.http_get {
            let port = port_of(&get.port, container)
                .ok_or_else(|| format!("its probe names port {:?}", get.port))?;
            let local = ports.get(&port).ok_or_else(|| {
                format!("its probe targets port {port}, which the container does not serve")
            })?;
            Action::Http {
                port: *local,
                path: get.path.clone().unwrap_or_else(|| "/".into()),
            }
        } else if let Some(command) = spec.exec.as_ref().and_then(|e| e.command.as_ref()) {
            Action::Exec {
                command: command
                    .iter()
                    .map(|w| localize(w, env, ports))
                    .collect::<Result<_, _>>()?,
                image: container.image.clone().unwrap_or_default(),
            }
        } else {
            return Err(
                "its probe is neither httpGet nor exec, which the bridge does not run".into(),
            );
        };
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.map_or(default, |s| s.max(0) as u64))
        };
        Ok(Probe {
            action,
            initial_delay: secs(spec.initial_delay_seconds, 0),
            period: secs(spec.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(spec.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: spec.failure_threshold.map_or(3, |t| t.max(1) as u32),
        })
    }

    /// Runs the probe once. Errors: the failure as the kubelet words it after
    /// `Readiness probe failed: ` (`HTTP probe failed with statuscode: 503`, the command's output).
    pub async fn check(&self, http: &reqwest::Client, bridge_dir: &Path) -> Result<(), String> {
        match &self.action {
            Action::Http { port, path } => {
                let url = format!("http://127.0.0.1:{port}{path}");
                match http.get(&url).timeout(self.timeout).send().await {
                    Ok(r) if (200..400).contains(&r.status().as_u16()) => Ok(()),
                    Ok(r) => Err(format!(
                        "HTTP probe failed with statuscode: {}",
                        r.status().as_u16()
                    )),
                    Err(e) if e.is_timeout() => Err(format!(
                        "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    )),
                    Err(e) => Err(format!(
                        "Get \"{url}\": {}",
                        crate::openai::client::error_chain(&e)
                    )),
                }
            }
            Action::Exec { command, image } => {
                let (program, args) = command
                    .split_first()
                    .ok_or_else(|| "its exec probe has no command".to_string())?;
                let path = path_of(bridge_dir, image)?;
                let mut run = tokio::process::Command::new(program);
                run.args(args)
                    .env_clear()
                    .env("PATH", &path)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                match tokio::time::timeout(self.timeout, run.output()).await {
                    Err(_) => Err(format!("command timed out after {:?}", self.timeout)),
                    Ok(Err(e)) => Err(format!("cannot run {program}: {e}")),
                    Ok(Ok(out)) if out.status.success() => Ok(()),
                    Ok(Ok(out)) => {
                        let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
                        said.push_str(&String::from_utf8_lossy(&out.stderr));
                        Err(said.trim().to_string())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probe: serde_json::Value, image: &str) -> (Container, ProbeSpec) {
        let c: Container = serde_json::from_value(json!({
            "name": "main", "image": image,
            "ports": [{"name": "system", "containerPort": 9090}, {"containerPort": 8000}]
        }))
        .unwrap();
        (c, serde_json::from_value(probe).unwrap())
    }

    fn ports() -> BTreeMap<i32, u16> {
        BTreeMap::from([(8000, 41000), (9090, 41001)])
    }

    #[test]
    fn the_guides_exec_probe_runs_against_the_local_port_with_the_images_programs() {
        let (c, spec) = container(
            json!({"exec": {"command": ["/bin/sh", "-c", "curl -s http://localhost:8000/health | jq -e \".status == \\\"healthy\\\"\""]},
                   "initialDelaySeconds": 60, "periodSeconds": 60, "timeoutSeconds": 30, "failureThreshold": 10}),
            "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1",
        );
        let probe = Probe::from_spec(&spec, &c, &[], &ports()).unwrap();
        let Action::Exec { command, .. } = &probe.action else {
            panic!("{probe:?}")
        };
        assert_eq!(
            command[2],
            "curl -s http://127.0.0.1:41000/health | jq -e \".status == \\\"healthy\\\"\""
        );
        assert_eq!(probe.initial_delay, Duration::from_secs(60));
        assert_eq!(probe.failure_threshold, 10);
    }

    #[test]
    fn a_port_from_the_environment_or_by_name_is_moved_and_an_unserved_one_refused() {
        let env = [("DYN_HTTP_PORT".to_string(), "8000".to_string())];
        assert_eq!(
            localize("http://localhost:${DYN_HTTP_PORT}/health", &env, &ports()).unwrap(),
            "http://127.0.0.1:41000/health"
        );
        assert!(localize("http://localhost:7000/", &env, &ports()).is_err());
        let (c, spec) = container(
            json!({"httpGet": {"path": "/live", "port": "system"}, "periodSeconds": 5, "timeoutSeconds": 30, "failureThreshold": 1}),
            "img:1",
        );
        let probe = Probe::from_spec(&spec, &c, &[], &ports()).unwrap();
        assert_eq!(
            probe.action,
            Action::Http {
                port: 41001,
                path: "/live".into()
            }
        );
        assert_eq!(
            (probe.period, probe.timeout, probe.failure_threshold),
            (Duration::from_secs(5), Duration::from_secs(30), 1)
        );
        let (c, spec) = container(json!({"tcpSocket": {"port": 8000}}), "img:1");
        assert!(Probe::from_spec(&spec, &c, &[], &ports()).is_err());
    }

    #[test]
    fn only_the_nojq_image_lacks_jq() {
        assert_eq!(
            programs_of("nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1"),
            ["sh", "curl", "jq"]
        );
        assert_eq!(
            programs_of("nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1-nojq"),
            ["sh", "curl"]
        );
    }

    #[tokio::test]
    async fn an_exec_probe_fails_with_the_shells_words_when_the_image_lacks_jq() {
        if crate::command::locate("jq").is_none() || crate::command::locate("curl").is_none() {
            eprintln!("SKIP: the host has no jq or curl");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let probe = |image: &str| Probe {
            action: Action::Exec {
                command: [
                    "/bin/sh",
                    "-c",
                    "echo '{\"status\":\"healthy\"}' | jq -e '.status == \"healthy\"'",
                ]
                .map(String::from)
                .to_vec(),
                image: image.into(),
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            failure_threshold: 1,
        };
        let http = reqwest::Client::new();
        assert_eq!(probe("img:0.4.1").check(&http, dir.path()).await, Ok(()));
        let failed = probe("img:0.4.1-nojq")
            .check(&http, dir.path())
            .await
            .unwrap_err();
        assert!(failed.contains("jq: not found"), "{failed}");
    }
}
