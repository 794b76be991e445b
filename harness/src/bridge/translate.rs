//! A simulated pod's main container as the real Dynamo process that backs it, vLLM swapped for the mocker.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::BridgeError;
use super::probe::Probe;
use crate::release::{DynamoVersion, Planes};

/// What a pod's process needs from outside the pod spec.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The release the process runs.
    pub version: DynamoVersion,
    /// The Python of that release's environment.
    pub python: PathBuf,
    /// The tokenizer directory the mocker loads in place of the model's weights.
    pub model_path: String,
    /// The Hugging Face home in which that directory is laid out under the names it is served as
    /// ([`crate::dynamo::model::ModelDir::hf_snapshot`]).
    pub hf_home: String,
    /// Secrets of the pod's namespace the container refers to, by name, then key.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// The real etcd standing in for the platform's (0.4.x).
    pub etcd_url: Option<String>,
    /// The real NATS standing in for the platform's (0.4.x).
    pub nats_url: Option<String>,
    /// The file-discovery directory of the pod's Kubernetes namespace (1.x).
    pub discovery_dir: PathBuf,
    /// The local Hugging Face Hub, for a release whose frontend asks the Hub
    /// ([`crate::release::Release::asks_the_hub`]).
    pub hf_endpoint: Option<String>,
}

/// What the process does in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `dynamo.frontend`.
    Frontend,
    /// A decode (aggregated) worker.
    Decode,
    /// A prefill worker.
    Prefill,
}

/// A container's probes as the bridge runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    /// `startupProbe`: until it passes, neither of the others runs.
    pub startup: Option<Probe>,
    /// `readinessProbe`: without one, the pod is Ready while its process runs.
    pub readiness: Option<Probe>,
    /// `livenessProbe`: after `failureThreshold` failures in a row the process is restarted.
    pub liveness: Option<Probe>,
}

/// A process to start for a pod.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment (never logged: it may hold the Hugging Face token).
    pub env: Vec<(String, String)>,
    /// Container port to local port.
    pub ports: BTreeMap<i32, u16>,
    /// What it does.
    pub role: Role,
    /// The release it runs.
    pub version: DynamoVersion,
    /// The container's probes, aimed at the process: startup, readiness, liveness (each if set).
    pub probes: Probes,
    /// The Dynamo namespace it serves in.
    pub dynamo_namespace: String,
    /// What was substituted, for the pod's log.
    pub notes: Vec<String>,
}

/// The words of the container's command: `sh -c "<script>"` scripts are cut at the first redirection or pipe.
pub fn command_words(container: &Container) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let shell = matches!(
        command
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["/bin/sh" | "sh" | "/bin/bash" | "bash", "-c"]
    );
    if !shell {
        return command.into_iter().chain(args).collect();
    }
    let script = args.join(" ");
    let mut words = Vec::new();
    for word in script.split_whitespace() {
        if word.starts_with('|')
            || word.starts_with('>')
            || word.starts_with("2>")
            || word == ";"
            || word == "&&"
        {
            break;
        }
        words.push(word.trim_matches(['"', '\'']).to_string());
    }
    words
}

/// The value of `flag` in `words` (`--flag value` or `--flag=value`), if given.
pub fn flag_value(words: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    words.iter().enumerate().find_map(|(i, w)| {
        if w == flag {
            words.get(i + 1).cloned()
        } else {
            w.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// `words` without `flag` and its value.
fn without_flag(words: &[String], flag: &str) -> Vec<String> {
    let eq = format!("{flag}=");
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
        } else if w == flag {
            skip = true;
        } else if !w.starts_with(&eq) {
            out.push(w.clone());
        }
    }
    out
}

/// The container's environment, secrets resolved; `$(VAR)` references are left as written.
fn container_env(
    pod: &Pod,
    container: &Container,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, BridgeError> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: String, value: String| match env.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in container.env_from.iter().flatten() {
        if let Some(secret) = &from.secret_ref {
            match secrets.get(&secret.name) {
                Some(data) => data.iter().for_each(|(k, v)| set(k.clone(), v.clone())),
                None if secret.optional == Some(true) => {}
                None => {
                    return Err(BridgeError::Pod {
                        pod: pod_name,
                        reason: format!("secret {} (envFrom) does not exist", secret.name),
                    });
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match (&from.secret_key_ref, &from.field_ref) {
                (Some(key), _) => secrets
                    .get(&key.name)
                    .and_then(|d| d.get(&key.key))
                    .cloned()
                    .ok_or_else(|| BridgeError::Pod {
                        pod: pod_name.clone(),
                        reason: format!(
                            "env {}: secret {} has no key {}",
                            var.name, key.name, key.key
                        ),
                    })?,
                (None, Some(field)) => match field.field_path.as_str() {
                    "metadata.name" => pod_name.clone(),
                    "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                    "status.podIP" => "127.0.0.1".into(),
                    _ => continue,
                },
                _ => continue,
            },
            (None, None) => String::new(),
        };
        set(var.name.clone(), value);
    }
    Ok(env)
}

fn env_get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn env_set(env: &mut Vec<(String, String)>, name: &str, value: impl Into<String>) {
    let value = value.into();
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.to_string(), value)),
    }
}

/// The process for `pod`: its own command, arguments and environment, ports moved to free local
/// ones, vLLM replaced by Dynamo's mocker. `free_port` hands out local ports.
pub fn launch(
    pod: &Pod,
    context: &LaunchContext,
    free_port: &mut dyn FnMut() -> Result<u16, BridgeError>,
) -> Result<Launch, BridgeError> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let refuse = |reason: String| BridgeError::Pod {
        pod: pod_name.clone(),
        reason,
    };
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or_else(|| refuse("no containers".into()))?;
    let words = command_words(container);
    let module = match words.as_slice() {
        [python, dash_m, module, ..] if python.starts_with("python") && dash_m == "-m" => {
            module.clone()
        }
        _ => {
            return Err(refuse(format!(
                "its command is not `python3 -m <module>`: {:?}",
                words.join(" ")
            )));
        }
    };
    let rest: Vec<String> = words[3..].to_vec();
    let mut env = container_env(pod, container, &context.secrets)?;
    let dynamo_namespace = env_get(&env, "DYN_NAMESPACE")
        .unwrap_or("dynamo")
        .to_string();
    let mut notes = Vec::new();

    // Container ports, the system port and the HTTP port each get a local port.
    let mut container_ports: Vec<i32> = container
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    let system_port: Option<i32> = env_get(&env, "DYN_SYSTEM_PORT").and_then(|p| p.parse().ok());
    let http_port: Option<i32> = flag_value(&rest, "--http-port")
        .or_else(|| env_get(&env, "DYN_HTTP_PORT").map(str::to_string))
        .and_then(|p| p.parse().ok())
        .or((module == "dynamo.frontend").then_some(8000));
    container_ports.extend(system_port.iter().chain(http_port.iter()));
    container_ports.sort_unstable();
    container_ports.dedup();
    let mut ports = BTreeMap::new();
    for port in container_ports {
        ports.insert(port, free_port()?);
    }
    let local = |port: i32| ports[&port].to_string();

    let loopback = [
        ("DYN_SYSTEM_HOST", "127.0.0.1"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HOME", context.hf_home.as_str()),
        ("PYTHONUNBUFFERED", "1"),
    ];
    for (k, v) in loopback {
        env_set(&mut env, k, v);
    }
    if let Some(endpoint) = &context.hf_endpoint {
        env_set(&mut env, crate::dynamo::hub::ENDPOINT_VAR, endpoint);
    }
    if env_get(&env, "DYN_LOG").is_none() {
        env_set(&mut env, "DYN_LOG", "info");
    }
    if let Some(port) = system_port {
        env_set(&mut env, "DYN_SYSTEM_PORT", local(port));
    }
    if let Some(port) = http_port {
        for var in ["DYN_HTTP_PORT", "DYNAMO_PORT"] {
            if env_get(&env, var).is_some() {
                env_set(&mut env, var, local(port));
            }
        }
    }
    let planes: Vec<String> = match context.version.release().planes {
        Planes::EtcdAndNats => {
            for (var, url) in [
                ("ETCD_ENDPOINTS", &context.etcd_url),
                ("NATS_SERVER", &context.nats_url),
            ] {
                if let Some(url) = url {
                    if let Some(was) = env_get(&env, var) {
                        notes.push(format!(
                            "{var} {was} -> {url} (the platform's, run as a local process)"
                        ));
                    }
                    env_set(&mut env, var, url.clone());
                }
            }
            // 1.0.2's operator asks for Kubernetes discovery, which needs real pods; the bridge's
            // processes find each other through the platform's etcd, as the release's default.
            if env_get(&env, "DYN_DISCOVERY_BACKEND").is_some_and(|b| b != "etcd") {
                notes.push("DYN_DISCOVERY_BACKEND -> etcd (the platform's, run as a local process; Kubernetes discovery needs real pods)".into());
                env_set(&mut env, "DYN_DISCOVERY_BACKEND", "etcd");
            }
            Vec::new()
        }
        Planes::FileTcpZmq => {
            env_set(
                &mut env,
                "DYN_FILE_KV",
                context.discovery_dir.display().to_string(),
            );
            for (var, host) in crate::dynamo::deployment::LOOPBACK_HOSTS_1X {
                env_set(&mut env, var, host);
            }
            // The operator's Kubernetes discovery needs real pods; the bridge's processes share files.
            env_set(&mut env, "DYN_DISCOVERY_BACKEND", "file");
            crate::dynamo::deployment::PLANES_1X
                .map(String::from)
                .to_vec()
        }
    };

    let (role, mut args) = match module.as_str() {
        "dynamo.frontend" => {
            let mut args = without_flag(&without_flag(&rest, "--http-port"), "--http-host");
            args.splice(
                0..0,
                ["-m", "dynamo.frontend", "--http-host", "127.0.0.1"].map(String::from),
            );
            if let Some(port) = http_port {
                args.extend(["--http-port".to_string(), local(port)]);
            }
            (Role::Frontend, args)
        }
        "dynamo.vllm" => {
            let model = flag_value(&rest, "--model")
                .ok_or_else(|| refuse("dynamo.vllm without --model".into()))?;
            let prefill = rest.iter().any(|w| w == "--is-prefill-worker");
            let dropped: Vec<&String> = rest
                .iter()
                .filter(|w| {
                    !["--model", "--is-prefill-worker", model.as_str()].contains(&w.as_str())
                })
                .collect();
            notes.push(format!(
                "vLLM replaced by Dynamo's mocker (tokenizer of {model}, no weights, no GPU){}",
                if dropped.is_empty() {
                    String::new()
                } else {
                    format!("; engine flags not passed: {dropped:?}")
                }
            ));
            let mut args = [
                "-m",
                "dynamo.mocker",
                "--model-path",
                &context.model_path,
                "--model-name",
                &model,
            ]
            .map(String::from)
            .to_vec();
            let role = if prefill { Role::Prefill } else { Role::Decode };
            args.extend(
                context
                    .version
                    .profile()
                    .mocker_roles
                    .args(prefill, &dynamo_namespace),
            );
            (role, args)
        }
        other => {
            return Err(refuse(format!(
                "module {other} has no local counterpart (expected dynamo.frontend or dynamo.vllm)"
            )));
        }
    };
    args.extend(planes);

    let probe_env = container_env(pod, container, &context.secrets).unwrap_or_default();
    let aimed = |spec: &Option<k8s_openapi::api::core::v1::Probe>| {
        spec.as_ref()
            .map(|p| Probe::from_spec(p, container, &probe_env, &ports).map_err(&refuse))
            .transpose()
    };
    let probes = Probes {
        startup: aimed(&container.startup_probe)?,
        readiness: aimed(&container.readiness_probe)?,
        liveness: aimed(&container.liveness_probe)?,
    };
    Ok(Launch {
        program: context.python.clone(),
        args,
        env,
        ports,
        role,
        version: context.version,
        probes,
        dynamo_namespace,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::probe::Action;
    use crate::k8s::kinds::{DynamoComponentDeployment, DynamoGraphDeployment};
    use crate::operator::{component, graph};
    use serde_json::{Value, json};

    /// The guide's pods as the stand-in operator specifies them.
    fn guide_pods() -> Vec<Pod> {
        let mut value: Value =
            serde_saphyr::from_str(include_str!("../../../fixtures/guide/disagg-graph.yaml"))
                .unwrap();
        value["metadata"]["namespace"] = "dynamo-cloud".into();
        let g: DynamoGraphDeployment = serde_json::from_value(value).unwrap();
        let platform = component::PlatformEnv {
            nats: Some("nats://dynamo-platform-nats.dynamo-cloud:4222".into()),
            etcd: Some("dynamo-platform-etcd.dynamo-cloud:2379".into()),
        };
        graph::components(&g)
            .unwrap()
            .into_iter()
            .map(|c| {
                let dcd: DynamoComponentDeployment = serde_json::from_value(c).unwrap();
                let d = component::deployment(&dcd, &platform);
                serde_json::from_value(json!({
                    "metadata": {"name": format!("{}-abc", d["metadata"]["name"].as_str().unwrap()), "namespace": "dynamo-cloud"},
                    "spec": d["spec"]["template"]["spec"]
                }))
                .unwrap()
            })
            .collect()
    }

    fn context(version: DynamoVersion) -> LaunchContext {
        LaunchContext {
            version,
            python: "/venv/bin/python".into(),
            model_path: "/models/qwen".into(),
            hf_home: "/models/qwen.hf".into(),
            secrets: [(
                "hf-token-secret".to_string(),
                [("HF_TOKEN".to_string(), "hf_secret".to_string())].into(),
            )]
            .into(),
            etcd_url: Some("http://127.0.0.1:21000".into()),
            nats_url: Some("nats://127.0.0.1:21001".into()),
            discovery_dir: "/run/discovery".into(),
            hf_endpoint: None,
        }
    }

    fn ports() -> impl FnMut() -> Result<u16, BridgeError> {
        let mut next = 25_000;
        move || {
            next += 1;
            Ok(next)
        }
    }

    #[test]
    fn shell_scripts_are_cut_at_pipes_and_redirections() {
        let c: Container =
            serde_json::from_value(json!({"name": "m", "command": ["/bin/sh", "-c"],
            "args": ["python3 -m dynamo.vllm --model Qwen/Qwen3-0.6B  2>&1 | tee /tmp/vllm.log"]}))
            .unwrap();
        assert_eq!(
            command_words(&c),
            ["python3", "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-0.6B"]
        );
    }

    #[test]
    fn the_prefill_worker_becomes_a_mocker_on_its_own_system_port() {
        let pod = &guide_pods()[2];
        let launch = launch(pod, &context("1.6.1".parse().unwrap()), &mut ports()).unwrap();
        assert_eq!(launch.role, Role::Prefill);
        assert_eq!(
            &launch.args[..6],
            [
                "-m",
                "dynamo.mocker",
                "--model-path",
                "/models/qwen",
                "--model-name",
                "Qwen/Qwen3-0.6B"
            ]
        );
        assert!(
            launch
                .args
                .windows(2)
                .any(|w| w == ["--disaggregation-mode", "prefill"])
        );
        let local = launch.ports[&9090];
        assert_eq!(
            env_get(&launch.env, "DYN_SYSTEM_PORT"),
            Some(local.to_string().as_str())
        );
        assert_eq!(env_get(&launch.env, "HF_TOKEN"), Some("hf_secret"));
        assert_eq!(
            env_get(&launch.env, "DYN_NAMESPACE"),
            Some("vllm-v1-disagg-router")
        );
        assert_eq!(
            launch.probes.readiness.map(|p| p.action),
            Some(Action::Http {
                port: local,
                path: "/health".into(),
            })
        );
    }

    #[test]
    fn a_0_4_worker_serves_its_graphs_namespace_on_the_local_platform() {
        let pod = &guide_pods()[1];
        let launch = launch(pod, &context(DynamoVersion::guide()), &mut ports()).unwrap();
        assert_eq!(launch.role, Role::Decode);
        assert!(
            launch
                .args
                .windows(2)
                .any(|w| w == ["--endpoint", "dyn://vllm-v1-disagg-router.backend.generate"])
        );
        assert_eq!(
            env_get(&launch.env, "ETCD_ENDPOINTS"),
            Some("http://127.0.0.1:21000")
        );
        assert_eq!(
            env_get(&launch.env, "NATS_SERVER"),
            Some("nats://127.0.0.1:21001")
        );
        assert_eq!(env_get(&launch.env, "HF_ENDPOINT"), None);
    }

    #[test]
    fn a_release_that_asks_the_hub_is_pointed_at_the_local_hub() {
        let context = LaunchContext {
            hf_endpoint: Some("http://127.0.0.1:21002".into()),
            ..context("0.8.1".parse().unwrap())
        };
        for pod in &guide_pods() {
            let launch = launch(pod, &context, &mut ports()).unwrap();
            assert_eq!(
                env_get(&launch.env, "HF_ENDPOINT"),
                Some("http://127.0.0.1:21002"),
                "{:?}",
                launch.role
            );
        }
    }

    #[test]
    fn the_frontend_listens_on_loopback_and_keeps_the_guides_probe() {
        let pod = &guide_pods()[0];
        let launch = launch(pod, &context(DynamoVersion::guide()), &mut ports()).unwrap();
        let local = launch.ports[&8000];
        assert_eq!(launch.role, Role::Frontend);
        assert!(launch.args.windows(2).any(|w| w == ["--router-mode", "kv"]));
        assert!(
            launch
                .args
                .windows(2)
                .any(|w| w == ["--http-port".to_string(), local.to_string()])
        );
        assert!(
            launch
                .args
                .windows(2)
                .any(|w| w == ["--http-host", "127.0.0.1"])
        );
        let readiness = launch.probes.readiness.unwrap();
        let Action::Exec { command, .. } = readiness.action else {
            panic!("the guide's frontend probe is an exec probe")
        };
        assert!(
            command[2].starts_with(&format!("curl -s http://127.0.0.1:{local}/health | jq -e")),
            "{command:?}"
        );
        assert_eq!(readiness.initial_delay, std::time::Duration::from_secs(60));
    }

    #[test]
    fn an_unknown_module_is_refused_naming_the_pod() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "main", "command": ["python3", "-m", "dynamo.sglang"]}]}}))
            .unwrap();
        let err = launch(&pod, &context("1.6.1".parse().unwrap()), &mut ports())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pod p: module dynamo.sglang has no local counterpart (expected dynamo.frontend or dynamo.vllm)"
        );
    }

    #[test]
    fn a_missing_secret_is_named() {
        let mut pod = guide_pods()[1].clone();
        let mut ctx = context("1.6.1".parse().unwrap());
        ctx.secrets.clear();
        pod.metadata.name = Some("w".into());
        let err = launch(&pod, &ctx, &mut ports()).unwrap_err().to_string();
        assert_eq!(
            err,
            "pod w: secret hf-token-secret (envFrom) does not exist"
        );
    }
}
