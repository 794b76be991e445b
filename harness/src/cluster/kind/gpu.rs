//! GPUs on the kind provider: the GPU runner's setup (toolkit in the workers, the GPU operator) and the GPU gate's judgement.
//!
//! The gate holds before any Dynamo stage: nodes advertise `nvidia.com/gpu`, the GPU operator's
//! validator passed on every GPU node, and a pod that asks for one GPU sees exactly one. Its
//! judgement is pure ([`advertised`], [`validated`], [`one_gpu`]) so that recorded node and pod
//! states test it; on the simulated path the validator is not there (no GPU operator) and the pod
//! reads the device plugin's `NVIDIA_VISIBLE_DEVICES` instead of running `nvidia-smi`.
//!
//! The real path (`set_up`, `check_host`) has never run on this project's machines (no GPU).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Gpus, KindCluster, KindError};
use crate::command::{self, Bounds};
use crate::config::Config;
use crate::docker::Engine;
use crate::k8s::{K8sError, MANAGED_BY_LABEL, wait};

/// The extended resource GPUs are requested by.
pub const RESOURCE: &str = "nvidia.com/gpu";
/// The node label of GPU nodes (the GPU operator's feature discovery sets it; the simulated
/// workers carry it from the kind configuration).
pub const GPU_NODE_LABEL: &str = "nvidia.com/gpu.present";
/// The GPU operator's namespace and the label of its validator pods.
pub const OPERATOR_NAMESPACE: &str = "gpu-operator";
/// The label selecting the GPU operator's validator pods.
pub const VALIDATOR_SELECTOR: &str = "app=nvidia-operator-validator";
/// The NGC Helm repository of the GPU operator.
pub const OPERATOR_REPO: &str = "https://helm.ngc.nvidia.com/nvidia";
/// The image whose `nvidia-smi` (injected by the NVIDIA runtime) the gate's pod runs on real GPUs.
pub const SMI_IMAGE: &str = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04";

/// GPUs listed by `nvidia-smi -L` (`GPU 0: NVIDIA A100 … (UUID: GPU-…)`).
pub fn count_gpus(listing: &str) -> usize {
    listing
        .lines()
        .filter(|l| l.trim_start().starts_with("GPU "))
        .count()
}

/// Device IDs in an `NVIDIA_VISIBLE_DEVICES` value (`none`, `void` and empty mean none).
pub fn visible_devices(value: &str) -> Vec<&str> {
    match value.trim() {
        "" | "none" | "void" => Vec::new(),
        list => list.split(',').map(str::trim).collect(),
    }
}

/// `nvidia.com/gpu` each GPU node has allocatable, by node name.
pub fn gpu_capacity(nodes: &[Node]) -> BTreeMap<String, i64> {
    nodes
        .iter()
        .filter(|n| n.labels().get(GPU_NODE_LABEL).map(String::as_str) == Some("true"))
        .map(|n| {
            let count = n
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get(RESOURCE))
                .and_then(|q| q.0.parse::<i64>().ok())
                .unwrap_or(0);
            (n.name_any(), count)
        })
        .collect()
}

/// Problems with the nodes' GPUs: no GPU node, or a GPU node advertising none.
pub fn advertised(nodes: &[Node]) -> Vec<String> {
    let capacity = gpu_capacity(nodes);
    if capacity.is_empty() {
        return vec![format!("no node is labelled {GPU_NODE_LABEL}=true")];
    }
    capacity
        .iter()
        .filter(|(_, count)| **count < 1)
        .map(|(node, _)| format!("node {node} advertises no allocatable {RESOURCE}"))
        .collect()
}

/// Problems with the GPU operator's validation: a GPU node without a validator pod that is
/// Running with every container Ready (the validator's init containers check the driver, the
/// toolkit, CUDA and the device plugin in turn).
pub fn validated(nodes: &[Node], validators: &[Pod]) -> Vec<String> {
    gpu_capacity(nodes)
        .keys()
        .filter_map(|node| {
            let pod = validators.iter().find(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            });
            match pod {
                None => Some(format!(
                    "no nvidia-operator-validator pod on GPU node {node}"
                )),
                Some(pod) if pod_ready(pod) => None,
                Some(pod) => Some(format!(
                    "nvidia-operator-validator on node {node} has not passed: {}",
                    pod_state(pod)
                )),
            }
        })
        .collect()
}

/// Problems with the one-GPU pod: it must have succeeded and seen exactly one GPU, as
/// `nvidia-smi -L` lists them (real) or as the device plugin names them (simulated; the pod
/// prints `NVIDIA_VISIBLE_DEVICES=<ids>`).
pub fn one_gpu(pod: &Pod, log: &str, gpus: Gpus) -> Vec<String> {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase != "Succeeded" {
        return vec![format!(
            "the one-GPU pod {} did not succeed: {}; its output: {}",
            pod.name_any(),
            pod_state(pod),
            command::tail(log, 3)
        )];
    }
    let seen = match gpus {
        Gpus::Real => count_gpus(log),
        Gpus::Simulated => log
            .lines()
            .find_map(|l| l.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
            .map_or(0, |v| visible_devices(v).len()),
    };
    if seen == 1 {
        Vec::new()
    } else {
        vec![format!(
            "a pod that asked for one {RESOURCE} saw {seen}: {}",
            command::tail(log, 4)
        )]
    }
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// A pod as a failure names it (phase, readiness, its containers' kubelet reasons).
pub fn pod_state(pod: &Pod) -> String {
    crate::k8s::pods::describe(pod)
}

/// The gate's pod: asks for one GPU under RuntimeClass `nvidia` and prints what it sees.
pub fn gate_pod(name: &str, gpus: Gpus) -> Pod {
    let (image, script) = match gpus {
        Gpus::Real => (SMI_IMAGE, "nvidia-smi -L"),
        Gpus::Simulated => (
            "busybox:latest",
            "echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES",
        ),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1}},
        "spec": {
            "restartPolicy": "Never",
            "runtimeClassName": "nvidia",
            "containers": [{
                "name": "gpu",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "resources": {"limits": {RESOURCE: "1"}}
            }]
        }
    }))
    .expect("a valid pod")
}

/// Runs the gate's pod in `namespace` (bounded), then deletes it; its problems.
pub async fn run_gate_pod(client: &Client, namespace: &str, gpus: Gpus) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = format!("dynamo-conformance-gpu-gate-{}", std::process::id());
    if let Err(e) = pods
        .create(&PostParams::default(), &gate_pod(&name, gpus))
        .await
    {
        return vec![format!(
            "cannot create the one-GPU pod {namespace}/{name}: {e}"
        )];
    }
    let done = wait::until(
        client,
        wait::Wait {
            api: pods.clone(),
            name: &name,
            namespace: Some(namespace),
            condition: "finished",
            timeout: Duration::from_secs(180),
        },
        |p: Option<&Pod>| {
            matches!(
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        },
        |p: Option<&Pod>| p.map(pod_state).unwrap_or_else(|| "gone".into()),
    )
    .await;
    let problems = match done {
        Err(e) => vec![e.to_string()],
        Ok(pod) => {
            let log = pods
                .logs(&name, &LogParams::default())
                .await
                .unwrap_or_default();
            one_gpu(&pod, &log, gpus)
        }
    };
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    problems
}

/// Waits, watch-driven and bounded, until every GPU node advertises at least one GPU.
pub async fn wait_advertised(client: &Client, timeout: Duration) -> Result<(), KindError> {
    super::each_node_until(
        client,
        &format!("{GPU_NODE_LABEL}=true"),
        &format!("advertising {RESOURCE}"),
        timeout,
        |n| n.is_some_and(|n| advertised(std::slice::from_ref(n)).is_empty()),
        |n| {
            n.map(|n| advertised(std::slice::from_ref(n)).join("; "))
                .unwrap_or_else(|| "gone".into())
        },
    )
    .await
}

/// The GPU runner's host must run Docker with NVIDIA's runtime as the default and let it take
/// GPUs from volume mounts (NVIDIA's setting `accept-nvidia-visible-devices-as-volume-mounts`),
/// or the workers' `/var/run/nvidia-container-devices` mounts inject nothing.
pub async fn check_host(engine: &Engine) -> Result<(), KindError> {
    let info = engine.docker.info().await.map_err(|e| {
        KindError::Docker(crate::docker::DockerError::Api {
            what: "read the engine's info".into(),
            source: e,
        })
    })?;
    let runtime = info.default_runtime.unwrap_or_default();
    let toolkit =
        std::fs::read_to_string("/etc/nvidia-container-runtime/config.toml").unwrap_or_default();
    let problems = host_problems(&runtime, &toolkit);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(KindError::Gpu(problems.join("; ")))
    }
}

/// What is wrong with a GPU runner's Docker (`runtime`: its default runtime) and NVIDIA
/// container toolkit configuration (`toolkit`: /etc/nvidia-container-runtime/config.toml).
pub fn host_problems(runtime: &str, toolkit: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if runtime != "nvidia" {
        problems.push(format!(
            "Docker's default runtime is {runtime:?}, not \"nvidia\"; run `sudo nvidia-ctk runtime configure --runtime=docker --set-as-default` and restart Docker"
        ));
    }
    let accepts = toolkit.lines().any(|l| {
        let l = l.trim().replace(' ', "");
        l == "accept-nvidia-visible-devices-as-volume-mounts=true"
    });
    if !accepts {
        problems.push(
            "the NVIDIA container runtime does not take GPUs from volume mounts; run `sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place`"
                .into(),
        );
    }
    problems
}

/// What runs inside each worker node container on the GPU path, in order, as nvkind prepares
/// a node: hide the host's driver proc files, install NVIDIA's container toolkit from its apt
/// repository, make its runtime containerd's default, restart containerd.
pub const WORKER_SETUP: [&str; 4] = [
    "umount -R /proc/driver/nvidia || true",
    "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg && curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' > /etc/apt/sources.list.d/nvidia-container-toolkit.list && apt-get update -q && apt-get install -y -q nvidia-container-toolkit",
    "nvidia-ctk runtime configure --runtime=containerd --set-as-default --cdi.enabled",
    "systemctl restart containerd",
];

/// The Helm arguments that install the GPU operator at `version`: driver and toolkit off (the
/// host has the driver; the toolkit is in the workers), as NVIDIA documents it for kind.
pub fn operator_install_args(version: &str) -> Vec<String> {
    [
        "upgrade",
        "--install",
        "gpu-operator",
        "gpu-operator",
        "--repo",
        OPERATOR_REPO,
        "--version",
        version,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--set",
        "driver.enabled=false",
        "--set",
        "toolkit.enabled=false",
        "--wait",
        "--timeout",
        "10m",
    ]
    .map(String::from)
    .to_vec()
}

/// The GPU path after the cluster exists: the toolkit in each worker, the GPU operator, the gate.
pub async fn set_up(
    cluster: &KindCluster,
    config: &Config,
    client: &Client,
) -> Result<(), KindError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let workers = nodes
        .list(&ListParams::default().labels(&format!("{GPU_NODE_LABEL}=true")))
        .await
        .map_err(|e| K8sError::api("list the GPU workers", e))?;
    for worker in workers.items {
        let name = worker.name_any();
        for step in WORKER_SETUP {
            let what = format!("prepare GPU worker {name}: {step}");
            let mut docker = Command::new("docker");
            docker.args(["exec", &name, "sh", "-ec", step]);
            tokio::task::spawn_blocking(move || {
                command::run(&mut docker, &what, Bounds::within(Duration::from_secs(600)))
            })
            .await
            .expect("docker exec does not panic")?;
        }
    }
    let Some(binary) = cluster.helm.as_ref().map(|h| h.path.clone()) else {
        return Err(KindError::Gpu(
            "no Helm to install the GPU operator with".into(),
        ));
    };
    let mut helm = Command::new(binary);
    helm.arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(operator_install_args(&config.gpu_operator_version));
    let what = format!(
        "install the NVIDIA GPU operator {} with Helm",
        config.gpu_operator_version
    );
    tokio::task::spawn_blocking(move || {
        command::run(&mut helm, &what, Bounds::within(Duration::from_secs(900)))
    })
    .await
    .expect("helm does not panic")?;
    wait_advertised(client, Duration::from_secs(600)).await?;
    let mut problems = Vec::new();
    let node_list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| K8sError::api("list nodes", e))?;
    let validators: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let pods = validators
        .list(&ListParams::default().labels(VALIDATOR_SELECTOR))
        .await
        .map_err(|e| K8sError::api("list the GPU operator's validators", e))?;
    problems.extend(validated(&node_list.items, &pods.items));
    problems.extend(run_gate_pod(client, "default", Gpus::Real).await);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(KindError::Gpu(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, gpu_label: bool, allocatable: Option<&str>) -> Node {
        let mut labels = serde_json::Map::new();
        if gpu_label {
            labels.insert(GPU_NODE_LABEL.into(), "true".into());
        }
        let mut alloc = serde_json::Map::new();
        if let Some(n) = allocatable {
            alloc.insert(RESOURCE.into(), n.into());
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": alloc}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn nodes_must_advertise_gpus() {
        let ok = [node("cp", false, None), node("w1", true, Some("8"))];
        assert!(advertised(&ok).is_empty());
        assert_eq!(
            advertised(&[node("cp", false, None)]),
            ["no node is labelled nvidia.com/gpu.present=true"]
        );
        assert_eq!(
            advertised(&[node("w1", true, Some("0")), node("w2", true, None)]),
            [
                "node w1 advertises no allocatable nvidia.com/gpu",
                "node w2 advertises no allocatable nvidia.com/gpu"
            ]
        );
    }

    #[test]
    fn every_gpu_node_needs_a_passed_validator() {
        let nodes = [node("w1", true, Some("1")), node("w2", true, Some("1"))];
        let ready = json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]});
        let stuck = json!({"phase": "Pending", "initContainerStatuses": [{"name": "driver-validation", "ready": false, "restartCount": 3, "image": "i", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]});
        assert!(
            validated(
                &nodes,
                &[
                    pod("v1", "w1", ready.clone()),
                    pod("v2", "w2", ready.clone())
                ]
            )
            .is_empty()
        );
        let problems = validated(&nodes, &[pod("v1", "w1", ready), pod("v2", "w2", stuck)]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains(
                "node w2 has not passed: pod v2 Pending Ready=Unknown (driver-validation waiting: CrashLoopBackOff (back-off), restarted 3 times)"
            ),
            "{problems:?}"
        );
        assert_eq!(
            validated(&nodes[..1], &[]),
            ["no nvidia-operator-validator pod on GPU node w1"]
        );
    }

    #[test]
    fn the_gate_pod_must_see_exactly_one_gpu() {
        let done = pod("g", "w1", json!({"phase": "Succeeded"}));
        let one = "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1)\n";
        let two = "GPU 0: NVIDIA A100 (UUID: GPU-1)\nGPU 1: NVIDIA A100 (UUID: GPU-2)\n";
        assert!(one_gpu(&done, one, Gpus::Real).is_empty());
        assert!(one_gpu(&done, two, Gpus::Real)[0].contains("saw 2"));
        assert!(one_gpu(&done, "", Gpus::Real)[0].contains("saw 0"));
        assert!(
            one_gpu(
                &done,
                "NVIDIA_VISIBLE_DEVICES=GPU-simulated-w1-3\n",
                Gpus::Simulated
            )
            .is_empty()
        );
        assert!(
            one_gpu(&done, "NVIDIA_VISIBLE_DEVICES=a,b\n", Gpus::Simulated)[0].contains("saw 2")
        );
        assert!(one_gpu(&done, "NVIDIA_VISIBLE_DEVICES=\n", Gpus::Simulated)[0].contains("saw 0"));
        let failed = pod(
            "g",
            "w1",
            json!({"phase": "Failed", "containerStatuses": [{"name": "gpu", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 127, "reason": "Error"}}}]}),
        );
        let problems = one_gpu(&failed, "sh: nvidia-smi: not found\n", Gpus::Real);
        assert!(
            problems[0]
                .contains("did not succeed: pod g Failed Ready=Unknown (gpu exited 127 (Error))"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("nvidia-smi: not found"),
            "{problems:?}"
        );
    }

    #[test]
    fn gpu_listings_and_device_lists_are_counted() {
        assert_eq!(count_gpus("GPU 0: A (UUID: x)\nGPU 1: B (UUID: y)\n"), 2);
        assert_eq!(count_gpus("No devices were found\n"), 0);
        assert_eq!(visible_devices("none"), Vec::<&str>::new());
        assert_eq!(visible_devices("a, b"), ["a", "b"]);
    }

    #[test]
    fn the_gpu_runners_host_is_checked() {
        let good =
            "[nvidia-container-cli]\naccept-nvidia-visible-devices-as-volume-mounts = true\n";
        assert!(host_problems("nvidia", good).is_empty());
        let problems = host_problems("runc", "");
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("not \"nvidia\""));
        assert!(problems[1].contains("accept-nvidia-visible-devices-as-volume-mounts=true"));
    }

    #[test]
    fn the_operator_is_installed_without_driver_and_toolkit() {
        let args = operator_install_args("v25.3.4");
        let joined = args.join(" ");
        assert!(joined.contains("--repo https://helm.ngc.nvidia.com/nvidia"));
        assert!(joined.contains("--version v25.3.4"));
        assert!(joined.contains("--set driver.enabled=false"));
        assert!(joined.contains("--set toolkit.enabled=false"));
        assert!(joined.contains("--namespace gpu-operator --create-namespace"));
    }

    #[test]
    fn the_gate_pod_asks_for_one_gpu_under_the_nvidia_runtime_class() {
        for gpus in [Gpus::Real, Gpus::Simulated] {
            let pod = gate_pod("g", gpus);
            let spec = pod.spec.unwrap();
            assert_eq!(spec.runtime_class_name.as_deref(), Some("nvidia"));
            let limits = spec.containers[0]
                .resources
                .clone()
                .unwrap()
                .limits
                .unwrap();
            assert_eq!(limits[RESOURCE].0, "1");
        }
    }
}
