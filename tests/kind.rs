//! Field failures on the kind provider's real kubelets: each is injected into the shared kind
//! cluster, the matching case fails with the kubelet's own reason, and the cluster is restored.
//!
//! The faults are the ones users hit (`../shared/design/FACTS.md` §7): the platform's etcd image
//! gone from its registry (ai-dynamo/dynamo#2806), the `hf-token-secret` never created, a frontend
//! image without `jq` for the guide's readiness probe (#3726), and a hung worker that only its
//! liveness probe catches. The broken state is judged with `run --check-only` (the suite applies
//! nothing, so it sees the cluster as the fault left it); a normal run then heals it.
//! They break the shared kind graph, so `harness/test.sh` runs this binary on its own, one test at
//! a time, after the conformance runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::cluster::kind::{self, KindCluster};
use harness::config::{Config, ConfigLayer};
use harness::images::catalog;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

const BIN: &str = env!("CARGO_BIN_EXE_dynamo-conformance");
/// How long a fault may take to show (an image pull backing off, a probe's initial delay of 60 s).
const SHOW_BOUND: Duration = Duration::from_secs(300);
const NAMESPACE: &str = "dynamo-cloud";

fn config() -> Config {
    Config::load(
        ConfigLayer {
            provider: Some("kind".into()),
            ..ConfigLayer::default()
        },
        None,
    )
    .expect("the test's configuration loads")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs one case by exact name on the kind provider; its exit code and output.
fn case(name: &str, check_only: bool) -> (i32, String) {
    let mut command = Command::new(BIN);
    command.args(["run", "--provider", "kind", "--exact", name]);
    if check_only {
        command.arg("--check-only");
    }
    let out = command.output().expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Prints the lines of `output` that carry `needle` (evidence, shown with `--no-capture`).
fn show(what: &str, output: &str, needle: &str) {
    for line in output.lines().filter(|l| l.contains(needle)) {
        println!("{what}: {}", line.trim());
    }
}

/// Runs `name` normally (applying what it needs) and insists it passes: the shared cluster is whole.
fn healed(name: &str) {
    let (code, output) = case(name, false);
    assert_eq!(
        code, 0,
        "{name} did not pass on a healed cluster:\n{output}"
    );
}

/// The kind cluster (brought up by the first normal run) and a client for it.
async fn cluster(config: &Config) -> (KindCluster, Client) {
    let cluster = kind::status(config)
        .await
        .expect("the kind cluster's status")
        .expect("a kind cluster is up");
    let client = kind::client(&cluster).await.expect("a client");
    (cluster, client)
}

/// Polls (every second, bounded) until `check` returns `Some`; its value, or a panic naming `what`.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < SHOW_BOUND,
            "{what} did not happen within {SHOW_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The waiting reason of the first container of the pods matching `selector` that has one.
async fn waiting_reason(pods: &Api<Pod>, selector: &str) -> Option<String> {
    let listed = pods
        .list(&ListParams::default().labels(selector))
        .await
        .ok()?;
    listed.items.iter().find_map(|p| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
    })
}

/// The kind node containers, by name.
fn node_containers() -> Vec<String> {
    ["control-plane", "worker", "worker2"]
        .iter()
        .map(|n| format!("{}-{n}", kind::CLUSTER_NAME))
        .collect()
}

#[test]
fn a_missing_etcd_image_fails_the_platform_with_image_pull_back_off() {
    let config = config();
    healed("guide::platform::etcd_and_nats_running");
    let image = "bitnami/etcd:3.5.18-debian-12-r5";
    let rt = runtime();
    rt.block_on(async {
        let (cluster, client) = cluster(&config).await;
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let scale = |n: i32| serde_json::json!({"spec": {"replicas": n}});
        sets.patch(
            "dynamo-platform-etcd",
            &PatchParams::default(),
            &Patch::Merge(scale(0)),
        )
        .await
        .expect("scale etcd down");
        until("etcd-0 gone", || async {
            pods.get_opt("dynamo-platform-etcd-0")
                .await
                .ok()
                .and_then(|p| p.is_none().then_some(()))
        })
        .await;
        // The image disappears from every node, as it disappeared from Docker Hub.
        for node in node_containers() {
            let _ = Command::new("docker")
                .args(["exec", &node, "crictl", "rmi", image])
                .output();
        }
        sets.patch(
            "dynamo-platform-etcd",
            &PatchParams::default(),
            &Patch::Merge(scale(1)),
        )
        .await
        .expect("scale etcd up");
        let reason = until("etcd's image pull failing", || async {
            waiting_reason(&pods, "app.kubernetes.io/name=etcd")
                .await
                .filter(|r| r == "ImagePullBackOff" || r == "ErrImagePull")
        })
        .await;
        let (code, output) = case("guide::platform::etcd_and_nats_running", true);
        assert_eq!(code, 1, "the case passed without its etcd image:\n{output}");
        assert!(
            output.contains("ImagePullBackOff") || output.contains("ErrImagePull"),
            "the failure does not name the kubelet's {reason}:\n{output}"
        );
        assert!(
            output.contains(image),
            "the failure does not name the image:\n{output}"
        );
        assert!(
            output.contains("diagnosis: etcd-image-pull: "),
            "the failure does not name its diagnosis:\n{output}"
        );
        show("missing etcd image", &output, "ImagePull");
        kind::load(&cluster, &config.cache_dir, &[image.to_string()])
            .await
            .expect("the image loads again");
        pods.delete("dynamo-platform-etcd-0", &DeleteParams::default())
            .await
            .expect("restart etcd-0");
    });
    healed("guide::platform::etcd_and_nats_running");
}

#[test]
fn a_missing_hf_token_secret_fails_the_graph_with_create_container_config_error() {
    let config = config();
    healed("guide::graph::ready");
    let rt = runtime();
    rt.block_on(async {
        let (_, client) = cluster(&config).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        secrets
            .delete("hf-token-secret", &DeleteParams::default())
            .await
            .expect("delete the secret");
        let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
        pods.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(selector),
        )
        .await
        .expect("delete the decode worker's pod");
        until("the new decode pod failing its configuration", || async {
            waiting_reason(&pods, selector)
                .await
                .filter(|r| r == "CreateContainerConfigError")
        })
        .await;
        let (code, output) = case("guide::graph::component_pods", true);
        assert_eq!(code, 1, "the case passed without the secret:\n{output}");
        assert!(
            output.contains("CreateContainerConfigError")
                && output.contains("secret \"hf-token-secret\" not found"),
            "the failure does not carry the kubelet's reason:\n{output}"
        );
        assert!(
            output.contains("diagnosis: missing-hf-token-secret: "),
            "the failure does not name its diagnosis:\n{output}"
        );
        show("missing secret", &output, "CreateContainerConfigError");
        let (code, output) = case("guide::secret::hf_token_secret", true);
        assert_eq!(code, 1, "{output}");
        assert!(
            output.contains("secret dynamo-cloud/hf-token-secret does not exist"),
            "{output}"
        );
    });
    healed("guide::graph::ready");
}

#[test]
fn a_frontend_image_without_jq_leaves_the_graph_pending_with_the_probes_output() {
    let config = config();
    healed("guide::graph::ready");
    let rt = runtime();
    rt.block_on(async {
        let (cluster, client) = cluster(&config).await;
        let nojq = format!(
            "{}:{}{}",
            catalog::RUNTIME_REPOSITORY,
            config.dynamo_version,
            catalog::WITHOUT_JQ
        );
        kind::load(&cluster, &config.cache_dir, std::slice::from_ref(&nojq))
            .await
            .expect("the image without jq loads");
        // A fresh graph whose frontend image lacks jq, as in the field report.
        let graphs: Api<harness::k8s::kinds::DynamoGraphDeployment> =
            Api::namespaced(client.clone(), NAMESPACE);
        graphs
            .delete(harness::stages::graph::GRAPH, &DeleteParams::foreground())
            .await
            .expect("delete the graph");
        until("the graph gone", || async {
            graphs
                .get_opt(harness::stages::graph::GRAPH)
                .await
                .ok()
                .and_then(|g| g.is_none().then_some(()))
        })
        .await;
        let mut graph = harness::stages::graph::manifest(&config).expect("the guide's graph");
        harness::stages::graph::fit_to_gpu_nodes(&client, &mut graph)
            .await
            .expect("fit the graph to the nodes");
        graph["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]["image"] =
            nojq.clone().into();
        harness::k8s::apply::apply_objects(&client, "fault/no-jq", vec![graph], NAMESPACE, "graph")
            .await
            .expect("apply the graph");
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let frontend = until("the new frontend pod", || async {
            pods.list(&ListParams::default().labels("nvidia.com/dynamo-component=Frontend"))
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
        })
        .await;
        let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
        let probe = until("the new frontend's readiness probe failing", || async {
            events
                .list(
                    &ListParams::default()
                        .fields(&format!("involvedObject.name={frontend},reason=Unhealthy")),
                )
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|e| e.message)
                .find(|m| m.contains("jq"))
        })
        .await;
        let (code, output) = case("guide::graph::ready", true);
        assert_eq!(code, 1, "the graph counted as ready without jq:\n{output}");
        assert!(
            output.contains("Readiness probe failed") && output.contains("jq"),
            "the failure does not carry the probe's output ({probe}):\n{output}"
        );
        assert!(
            output.contains("vllm-v1-disagg-router-frontend"),
            "the failure does not name the frontend:\n{output}"
        );
        assert!(
            output.contains("diagnosis: frontend-probe-needs-jq: "),
            "the failure does not name its diagnosis:\n{output}"
        );
        show("frontend without jq", &output, "jq");
    });
    healed("guide::graph::ready");
}

#[test]
fn a_hung_worker_is_restarted_by_its_liveness_probe() {
    let config = config();
    healed("guide::graph::ready");
    let rt = runtime();
    rt.block_on(async {
        let (_, client) = cluster(&config).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let selector = "nvidia.com/dynamo-component=VllmDecodeWorker";
        let pod = pods
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list the decode pods")
            .items
            .into_iter()
            .next()
            .expect("a decode pod");
        let name = pod.name_any();
        let restarts = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum::<i32>())
        };
        let before = restarts(&pod);
        // Stop (not kill) the worker: its process stays, its /live stops answering.
        let mut stop = pods
            .exec(
                &name,
                ["pkill", "-STOP", "-f", "dynamo.mocker"],
                &AttachParams::default().stderr(true).stdout(true),
            )
            .await
            .expect("exec into the decode pod");
        let status = stop
            .take_status()
            .expect("an exec status")
            .await
            .expect("the exec ends");
        assert_eq!(
            status.status.as_deref(),
            Some("Success"),
            "could not stop the worker: {status:?}"
        );
        let after = until("the kubelet restarting the hung worker", || async {
            pods.get_opt(&name)
                .await
                .ok()
                .flatten()
                .map(|p| restarts(&p))
                .filter(|r| *r > before)
        })
        .await;
        let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
        let said: Vec<String> = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .expect("list the pod's events")
            .items
            .into_iter()
            .filter_map(|e| Some(format!("{}: {}", e.reason?, e.message?)))
            .collect();
        assert!(
            said.iter()
                .any(|e| e.starts_with("Unhealthy: Liveness probe failed")),
            "restarts {before} -> {after}, but no liveness failure among {said:?}"
        );
    });
    healed("guide::workers::decode_health");
}

/// The runtime images as built, in throwaway containers (testcontainers): `dynamo.vllm` says its
/// engine is simulated and becomes the mocker in the release's role; the guide's readiness probe
/// (`… | jq -e '.status == "healthy"'`) runs in the image, and fails in the variant without jq
/// exactly as it does in the field.
#[test]
fn the_runtime_images_run_the_mocker_and_carry_the_probes_tools() {
    use testcontainers::core::{CmdWaitFor, ExecCommand, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    let config = config();
    let up = Command::new(BIN)
        .args(["kind", "up"])
        .output()
        .expect("the binary runs");
    assert!(up.status.success(), "kind up failed: {up:?}");
    let tag = config.dynamo_version.to_string();
    let profile = config.dynamo_version.profile();
    runtime().block_on(async {
        let worker = GenericImage::new(catalog::RUNTIME_REPOSITORY, tag.as_str())
            .with_wait_for(WaitFor::message_on_stdout("SIMULATED ENGINE"))
            .with_cmd([
                "python3",
                "-m",
                "dynamo.vllm",
                "--model",
                "Qwen/Qwen3-0.6B",
                "--is-prefill-worker",
            ])
            .start()
            .await
            .expect("the worker container starts and announces its engine");
        let said = String::from_utf8_lossy(&worker.stdout_to_vec().await.unwrap_or_default())
            .into_owned();
        // 0.4.x's prefill worker registers no model: its endpoints are served without a mocker.
        let expected = if profile.mocker_roles.prefill_registers_model {
            format!("as the prefill worker of Dynamo {tag}")
        } else {
            format!("--is-prefill-worker of Dynamo {tag} serves dynamo.prefill.generate")
        };
        assert!(said.contains(&expected), "{said}");
        let probe = r#"echo '{"status":"healthy"}' | jq -e '.status == "healthy"' && curl --version >/dev/null"#;
        for (variant, code) in [(tag.clone(), 0), (format!("{tag}{}", catalog::WITHOUT_JQ), 127)] {
            let container = GenericImage::new(catalog::RUNTIME_REPOSITORY, variant.as_str())
                .with_cmd(["sleep", "600"])
                .start()
                .await
                .expect("the container starts");
            let mut result = container
                .exec(
                    ExecCommand::new(["sh", "-c", probe])
                        .with_cmd_ready_condition(CmdWaitFor::exit()),
                )
                .await
                .expect("the probe runs");
            let exit = result.exit_code().await.expect("an exit code");
            let stderr =
                String::from_utf8_lossy(&result.stderr_to_vec().await.unwrap_or_default())
                    .into_owned();
            assert_eq!(exit, Some(code), "{variant}: {stderr}");
            if code != 0 {
                assert!(stderr.contains("jq: not found"), "{variant}: {stderr}");
            }
        }
    });
}

/// The path real vGPU clusters take, on real kubelets: `run --provider existing` against a fresh
/// kind cluster (recreated, the images preloaded, nothing of the guide's on it), with no `helm`
/// on the PATH and every download pointed at a dead proxy, given the charts as `helm pull` names
/// them (the stand-ins, packaged), the provisioner manifest as a file, the platform's values for
/// these kubelets as a file, requests fitted to the small nodes (`--fit-requests`, recorded as a
/// deviation) and the GPUs declared simulated (`--gpus simulated`). The guide passes, the
/// preflight finds every image on the nodes, and the run removes all it created.
#[test]
fn the_existing_provider_runs_the_guide_on_kind_from_files_with_no_helm_and_no_network() {
    let config = config();
    if config.dynamo_version != harness::release::DynamoVersion::guide() {
        println!(
            "SKIP: the stand-in charts packaged here have the guide's release's shape; Dynamo {} is run on existing with its own charts (run with DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1)",
            config.dynamo_version
        );
        return;
    }
    for args in [["kind", "down"], ["kind", "up"]] {
        let out = Command::new(BIN)
            .args(args)
            .output()
            .expect("the binary runs");
        assert!(out.status.success(), "{args:?} failed: {out:?}");
    }
    let cluster = runtime()
        .block_on(kind::status(&config))
        .expect("the kind cluster's status")
        .expect("a kind cluster is up");
    // The kubelets report the images `kind up` loaded in their next status (about 10 s).
    runtime().block_on(async {
        let client = kind::client(&cluster).await.expect("a client");
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
        let runtime_image = format!("{}:0.4.1", catalog::RUNTIME_REPOSITORY);
        until("the nodes to report the loaded images", || async {
            let listed = nodes.list(&ListParams::default()).await.ok()?;
            listed
                .items
                .iter()
                .flat_map(|n| n.status.iter().flat_map(|s| s.images.iter().flatten()))
                .flat_map(|i| i.names.iter().flatten())
                .any(|name| name.ends_with(&runtime_image))
                .then_some(())
        })
        .await;
    });
    let work = tempfile::tempdir().expect("a work directory");
    // The charts as an air-gapped user has them: `dynamo-crds-0.4.1.tgz`, packaged by Helm.
    let helm = harness::helm::resolve(None, &config.cache_dir).expect("the suite's Helm");
    let charts = work.path().join("charts");
    std::fs::create_dir(&charts).expect("a charts directory");
    let sources = work.path().join("sources");
    for chart in [
        harness::stages::chart::Chart::Crds,
        harness::stages::chart::Chart::Platform,
    ] {
        let dir = chart
            .stand_in()
            .materialize(&sources, "test")
            .expect("the chart is written");
        let packaged = Command::new(&helm.path)
            .arg("package")
            .arg(&dir)
            .arg("--destination")
            .arg(&charts)
            .output()
            .expect("helm runs");
        assert!(packaged.status.success(), "{packaged:?}");
        assert!(charts.join(chart.archive("0.4.1")).is_file());
    }
    // What a real kubelet needs of the stand-in platform chart: etcd's and NATS's data on claims,
    // no config-reloader sidecar (its image cannot be built here).
    let values = work.path().join("platform-values.yaml");
    std::fs::write(
        &values,
        "persistence:\n  enabled: true\nnats:\n  reloader:\n    enabled: false\n",
    )
    .expect("written");
    let token = "hf_existingOnKindTestToken0123456789";
    let token_file = work.path().join("hf-token");
    std::fs::write(&token_file, token).expect("written");
    // No helm anywhere on the PATH.
    let path: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|dir| !dir.join("helm").exists())
        .collect();
    let report = work.path().join("report");
    let out = Command::new(BIN)
        .args(["run", "--provider", "existing", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .arg("--charts-dir")
        .arg(&charts)
        .arg("--provisioner-manifest")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/local/cluster/local-path-storage.yaml"
        ))
        .arg("--platform-values")
        .arg(&values)
        .args(["--fit-requests", "--gpus", "simulated", "--hf-token-file"])
        .arg(&token_file)
        .arg("--report-dir")
        .arg(&report)
        .env("PATH", std::env::join_paths(path).expect("a PATH"))
        .env_remove("HF_TOKEN")
        .env_remove("DYNAMO_CONFORMANCE_PROVIDER")
        .envs(
            ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"]
                .map(|k| (k, "http://127.0.0.1:9")),
        )
        .envs(["NO_PROXY", "no_proxy"].map(|k| (k, "127.0.0.1,localhost")))
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("conformance: "))
        .expect("a summary line");
    assert!(
        summary.contains(" 0 failed, 0 blocked"),
        "{summary}\n{stdout}"
    );
    let passed: u32 = summary["conformance: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(passed >= 25, "{summary}");
    // The preflight found every image the guide asks for on the nodes.
    let preflight: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("preflight: "))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(
        preflight
            .iter()
            .any(|l| l.contains("nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.4.1")),
        "{stdout}"
    );
    assert!(
        preflight
            .iter()
            .all(|l| !l.contains("on no node") && !l.contains("not listed")),
        "{stdout}"
    );
    for said in [
        "charts installed with Helm v3.19.0 (the suite's build",
        "SKIP     guide::gpus::operator_validated",
    ] {
        assert!(stdout.contains(said), "{said} not printed:\n{stdout}");
    }
    let json = std::fs::read_to_string(report.join("report.json")).expect("report.json");
    for noted in [
        "deviation from the guide (--fit-requests)",
        "(--platform-values)",
        "dynamo-crds-0.4.1.tgz",
    ] {
        assert!(json.contains(noted), "{noted} not in report.json");
    }
    assert!(
        !stdout.contains("cleanup: could not remove") && !stderr.contains("is left"),
        "the run did not remove all it created:\n{stdout}\n{stderr}"
    );
    let everything = format!("{stdout}{stderr}{json}");
    assert!(!everything.contains(token), "the token leaked");
    // The run removes what it created: no namespace of the guide's is left once it ends.
    runtime().block_on(async {
        let client = kind::client(&cluster).await.expect("a client");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client);
        until("the run's namespaces and volumes to be deleted", || async {
            let mut left = Vec::new();
            for ns in [NAMESPACE, "local-path-storage"] {
                if namespaces.get_opt(ns).await.ok()?.is_some() {
                    left.push(ns.to_string());
                }
            }
            // The platform's claims' volumes, reclaimed by the provisioner before it went.
            left.extend(
                volumes
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .map(|pv| pv.name_any()),
            );
            left.is_empty().then_some(())
        })
        .await;
    });
}
