//! The processes of a local disaggregated Dynamo graph (frontend, decode, prefill) for each release.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use super::DynamoError;
use super::hub;
use super::install::PythonEnv;
use super::model::ModelDir;
use super::state::{WorkerRole, WorkerState};
use super::tools;
use crate::release::{DynamoVersion, Planes};

/// A process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// `frontend`, `decode`, `prefill`, `etcd`, `nats`, `hub`.
    pub name: &'static str,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment added to the supervisor's.
    pub env: Vec<(String, String)>,
    /// URLs that must each answer 200 before this process starts.
    pub start_after: Vec<String>,
}

impl ProcessSpec {
    /// The command line as a shell would show it, environment first.
    pub fn command_line(&self) -> String {
        let env = self.env.iter().map(|(k, v)| format!("{k}={v}"));
        let program = std::iter::once(self.program.display().to_string());
        env.chain(program)
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What must hold before the deployment counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Endpoint paths that the frontend's `/health` must list (e.g. the prefill worker's).
    pub frontend_lists: Vec<String>,
}

/// Everything to start, and where it will answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In start order.
    pub processes: Vec<ProcessSpec>,
    /// The frontend's base URL.
    pub frontend_url: String,
    /// The workers and their system ports.
    pub workers: Vec<WorkerState>,
    /// When it is ready.
    pub readiness: Readiness,
}

/// Dynamo 1.x's planes without etcd or NATS: file discovery, TCP requests, ZMQ events.
pub const PLANES_1X: [&str; 6] = [
    "--discovery-backend",
    "file",
    "--request-plane",
    "tcp",
    "--event-plane",
    "zmq",
];

/// Where 1.x binds its planes and system server (variable, value); without them, the machine's
/// first address. 1.2.1 to 1.5.1 read `DYN_TCP_RESPONSE_STREAM_HOST` as an interface name
/// ("Interface not found: 127.0.0.1"; 1.1.1 then finds no model), 1.6.1 takes either: `lo`
/// serves all of 1.1.1 to 1.6.1 (seen here).
pub const LOOPBACK_HOSTS_1X: [(&str, &str); 4] = [
    ("DYN_TCP_RPC_HOST", "127.0.0.1"),
    ("DYN_TCP_RESPONSE_STREAM_HOST", "lo"),
    ("DYN_EVENT_PLANE_HOST", "127.0.0.1"),
    ("DYN_SYSTEM_HOST", "127.0.0.1"),
];

/// Ports handed out, lowest and highest: Dynamo reads `DYN_SYSTEM_PORT` as an i16,
/// so a port above 32767 (most of Linux's ephemeral range) makes a worker exit.
const PORT_RANGE: (u16, u16) = (20_000, 32_767);

/// A free TCP port on the loopback interface, below 32768.
pub fn free_port() -> Result<u16, DynamoError> {
    let (low, high) = PORT_RANGE;
    let span = u32::from(high - low) + 1;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let start = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % span;
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .ok_or_else(|| DynamoError::Missing {
            what: format!("a free loopback port in {low}..={high}"),
            hint: "stop some local servers".into(),
        })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn pairs(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A mocker worker serving `model_name` from `model_path`, its system server on `port`.
fn mocker(
    name: &'static str,
    python: &Path,
    model_path: &str,
    model_name: &str,
    extra_args: &[&str],
    mut env: Vec<(String, String)>,
    port: &str,
) -> ProcessSpec {
    let mut args = strings(&[
        "-m",
        "dynamo.mocker",
        "--model-path",
        model_path,
        "--model-name",
        model_name,
    ]);
    args.extend(strings(extra_args));
    // Without the endpoint health status, /health stays 503 "notready" for good.
    env.extend(pairs(&[
        ("DYN_SYSTEM_PORT", port),
        ("DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS", "[\"generate\"]"),
    ]));
    ProcessSpec {
        name,
        program: python.to_path_buf(),
        args,
        env,
        start_after: Vec::new(),
    }
}

/// Plans the guide's graph for `version`: a frontend, a decode worker and a prefill worker,
/// each worker on Dynamo's mocker engine in place of vLLM, the workers run by `workers`'
/// release and environment (`version`'s own, or another on the same planes: version skew).
pub fn plan(
    version: DynamoVersion,
    env: &PythonEnv,
    workers: (DynamoVersion, &PythonEnv),
    model: &ModelDir,
    model_name: &str,
    run_dir: &Path,
    cache_dir: &Path,
) -> Result<Plan, DynamoError> {
    version.same_planes(workers.0)?;
    let python = env.python();
    let workers_python = workers.1.python();
    let skew = if workers.0 == version {
        String::new()
    } else {
        format!(", Dynamo {} beside the frontend's {version}", workers.0)
    };
    let model_path = model.path.display().to_string();
    let http_port = free_port()?.to_string();
    let frontend_url = format!("http://127.0.0.1:{http_port}");
    let decode_port = free_port()?.to_string();
    let prefill_port = free_port()?.to_string();
    let system_url = |port: &str| format!("http://127.0.0.1:{port}");
    model.hf_snapshot(model_name)?;
    let hf_home = model.hf_home().display().to_string();
    let mut common_env = pairs(&[
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HOME", hf_home.as_str()),
        ("DYN_LOG", "info"),
        ("PYTHONUNBUFFERED", "1"),
    ]);
    // The frontend starts once the Hub serves the model: it asks as soon as a worker registers.
    let mut hub_ready = Vec::new();
    let hub = if version.asks_the_hub(Some(workers.0)) {
        let port = free_port()?;
        let hub = hub::ensure(cache_dir, model, &[model_name])?;
        let url = format!("http://127.0.0.1:{port}");
        hub_ready.push(hub::model_info_url(&url, model_name));
        common_env.push((hub::ENDPOINT_VAR.into(), url));
        Some(ProcessSpec {
            name: "hub",
            program: hub.program.clone(),
            args: hub.command(&run_dir.join("hub"), port)?,
            env: Vec::new(),
            start_after: Vec::new(),
        })
    } else {
        None
    };
    let mut plan = match version.release().planes {
        Planes::FileTcpZmq => {
            let kv = run_dir.join("discovery").display().to_string();
            let planes = PLANES_1X;
            let mut base_env = common_env.clone();
            base_env.push(("DYN_FILE_KV".into(), kv));
            base_env.extend(pairs(&LOOPBACK_HOSTS_1X));
            let worker = |name: &'static str, mode: &str, port: &str| {
                let extra = [&["--disaggregation-mode", mode][..], &planes[..]].concat();
                mocker(
                    name,
                    &workers_python,
                    &model_path,
                    model_name,
                    &extra,
                    base_env.clone(),
                    port,
                )
            };
            let mut frontend_args = strings(&[
                "-m",
                "dynamo.frontend",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                &http_port,
            ]);
            frontend_args.extend(strings(&["--router-mode", "kv"]));
            frontend_args.extend(strings(&planes));
            Plan {
                processes: vec![
                    worker("prefill", "prefill", &prefill_port),
                    worker("decode", "decode", &decode_port),
                    ProcessSpec {
                        name: "frontend",
                        program: python.clone(),
                        args: frontend_args,
                        env: base_env.clone(),
                        start_after: hub_ready.clone(),
                    },
                ],
                frontend_url,
                workers: vec![
                    WorkerState {
                        role: WorkerRole::Decode,
                        system_url: system_url(&decode_port),
                        engine: format!("Dynamo mocker, --disaggregation-mode decode{skew}"),
                    },
                    WorkerState {
                        role: WorkerRole::Prefill,
                        system_url: system_url(&prefill_port),
                        engine: format!("Dynamo mocker, --disaggregation-mode prefill{skew}"),
                    },
                ],
                readiness: Readiness {
                    frontend_lists: vec!["prefill.generate".into(), "backend.generate".into()],
                },
            }
        }
        Planes::EtcdAndNats => {
            let tools::PlanePrograms { etcd, nats } = tools::ensure(cache_dir)?;
            let etcd_port = free_port()?.to_string();
            let etcd_peer = free_port()?.to_string();
            let nats_port = free_port()?.to_string();
            let nats_monitor = free_port()?.to_string();
            let etcd_url = format!("http://127.0.0.1:{etcd_port}");
            let peer_url = format!("http://127.0.0.1:{etcd_peer}");
            let etcd_data = run_dir.join("etcd").display().to_string();
            let nats_data = run_dir.join("nats").display().to_string();
            let mut base_env = common_env.clone();
            base_env.push(("ETCD_ENDPOINTS".into(), etcd_url.clone()));
            base_env.push((
                "NATS_SERVER".into(),
                format!("nats://127.0.0.1:{nats_port}"),
            ));
            let worker = |name: &'static str, endpoint: &str, port: &str| {
                let mut env = base_env.clone();
                env.extend(pairs(&[
                    ("DYN_SYSTEM_ENABLED", "true"),
                    ("DYN_SYSTEM_HOST", "127.0.0.1"),
                ]));
                mocker(
                    name,
                    &workers_python,
                    &model_path,
                    model_name,
                    &["--endpoint", endpoint],
                    env,
                    port,
                )
            };
            Plan {
                processes: vec![
                    ProcessSpec {
                        name: "etcd",
                        program: etcd,
                        args: tools::etcd_args("conformance", &etcd_data, &etcd_url, &peer_url),
                        env: Vec::new(),
                        start_after: Vec::new(),
                    },
                    ProcessSpec {
                        name: "nats",
                        program: nats,
                        args: tools::nats_args(&nats_port, &nats_monitor, &nats_data),
                        env: Vec::new(),
                        start_after: Vec::new(),
                    },
                    // 0.4.1's frontend misses models registered before it watches: it starts first.
                    ProcessSpec {
                        name: "frontend",
                        program: python.clone(),
                        args: strings(&[
                            "-m",
                            "dynamo.frontend",
                            "--http-host",
                            "127.0.0.1",
                            "--http-port",
                            &http_port,
                            "--router-mode",
                            "kv",
                        ]),
                        env: base_env.clone(),
                        start_after: [vec![format!("{etcd_url}/health")], hub_ready.clone()]
                            .concat(),
                    },
                    ProcessSpec {
                        start_after: vec![format!(
                            "http://127.0.0.1:{nats_monitor}/healthz?js-enabled-only=true"
                        )],
                        ..worker("decode", "dyn://dynamo.backend.generate", &decode_port)
                    },
                    // Two 0.4.1 workers registering one model at once race on NATS's object
                    // store ("no stream found for given subject"): the prefill waits for the decode.
                    ProcessSpec {
                        start_after: vec![format!("{}/health", system_url(&decode_port))],
                        ..worker("prefill", "dyn://dynamo.prefill.generate", &prefill_port)
                    },
                ],
                frontend_url,
                workers: vec![
                    WorkerState {
                        role: WorkerRole::Decode,
                        system_url: system_url(&decode_port),
                        engine: format!(
                            "Dynamo mocker, aggregated (0.4.1's mocker has no disaggregation mode){skew}"
                        ),
                    },
                    WorkerState {
                        role: WorkerRole::Prefill,
                        system_url: system_url(&prefill_port),
                        engine: format!(
                            "Dynamo mocker on dyn://dynamo.prefill.generate (serves no requests in 0.4.1){skew}"
                        ),
                    },
                ],
                readiness: Readiness {
                    frontend_lists: vec!["backend.generate".into()],
                },
            }
        }
    };
    plan.processes.splice(0..0, hub);
    Ok(plan)
}
