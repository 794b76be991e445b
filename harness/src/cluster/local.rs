//! The local provider: a real Kubernetes control plane built from the Go module proxy, with kwok nodes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::command::{self, Bounds, CommandError, minutes};
use crate::dynamo::DynamoError;
use crate::dynamo::install::digest;
use crate::dynamo::lock::{FileLock, SETUP_WAIT};
use crate::gobuild::{find_go, go_command};

/// The Kubernetes release the control plane is built from.
pub const KUBERNETES_VERSION: &str = "v1.34.4";
/// The kwok release (kwok controller and kwokctl).
pub const KWOK_VERSION: &str = "v0.7.0";
/// The etcd release.
pub const ETCD_VERSION: &str = "v3.6.16";

/// The kwokctl cluster's name.
pub const CLUSTER_NAME: &str = "dynamo-conformance";

/// When the proxy published k8s.io/kubernetes v1.34.4 (its `.info`), used as the build date.
const KUBERNETES_BUILD_DATE: &str = "2026-02-10T12:53:36Z";

// The wrapper modules, tidied: `go.sum` pins every dependency.
const K8S_GO_MOD: &str = include_str!("../../../fixtures/local/k8s/kubernetes/go.mod");
const K8S_GO_SUM: &str = include_str!("../../../fixtures/local/k8s/kubernetes/go.sum");
const K8S_TOOLS: &str = include_str!("../../../fixtures/local/k8s/kubernetes/tools.go");
const ETCD_GO_MOD: &str = include_str!("../../../fixtures/local/k8s/etcd/go.mod");
const ETCD_GO_SUM: &str = include_str!("../../../fixtures/local/k8s/etcd/go.sum");
const ETCD_TOOLS: &str = include_str!("../../../fixtures/local/k8s/etcd/tools.go");
const KWOK_GO_MOD: &str = include_str!("../../../fixtures/local/k8s/kwok/go.mod");
const KWOK_GO_SUM: &str = include_str!("../../../fixtures/local/k8s/kwok/go.sum");
const KWOK_TOOLS: &str = include_str!("../../../fixtures/local/k8s/kwok/tools.go");
const KWOKCTL_CONFIG: &str = include_str!("../../../fixtures/local/k8s/kwokctl.yaml");

/// The address the API server publishes in the `kubernetes` Service's endpoints; nothing listens there.
pub const ADVERTISE_ADDRESS: &str = "192.0.2.1";

/// How long `kwokctl create cluster` may take (it waits up to 2 minutes for the API server), and
/// then how long the cluster may take to answer `/readyz`.
const CREATE_WAIT: Duration = Duration::from_secs(180);
const READY_WAIT: Duration = Duration::from_secs(120);
/// How long the cluster's processes may take to exit after `kwokctl delete cluster`.
const STOP_WAIT: Duration = Duration::from_secs(90);
/// A bound for kwokctl's quick queries.
const QUERY_WAIT: Duration = Duration::from_secs(30);

/// Errors building or running the local cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Go is missing, or a build failed.
    #[error(transparent)]
    Go(#[from] crate::gobuild::GoError),
    /// A build or kwokctl command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The cluster did not become ready in time.
    #[error(
        "the local cluster did not become ready within {waited:?}; last seen: {detail} (logs in {logs})"
    )]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// What was last observed.
        detail: String,
        /// The components' log directory.
        logs: PathBuf,
    },
    /// The cluster's processes outlived `kwokctl delete cluster`.
    #[error("the local cluster's processes {pids:?} did not exit within {waited:?}")]
    StopTimeout {
        /// The pids still alive.
        pids: Vec<u32>,
        /// How long we waited.
        waited: Duration,
    },
    /// A lock could not be taken.
    #[error(transparent)]
    Lock(#[from] DynamoError),
}

impl LocalError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        LocalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The built programs, all under one cached `bin` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
    /// The kwok controller.
    pub kwok: PathBuf,
    /// kwokctl, which runs the cluster.
    pub kwokctl: PathBuf,
    /// kubectl of the same release (kwokctl needs one; the suite may use it too).
    pub kubectl: PathBuf,
}

impl Binaries {
    fn in_dir(bin: &Path) -> Binaries {
        Binaries {
            kube_apiserver: bin.join("kube-apiserver"),
            kube_controller_manager: bin.join("kube-controller-manager"),
            kube_scheduler: bin.join("kube-scheduler"),
            etcd: bin.join("etcd"),
            kwok: bin.join("kwok"),
            kwokctl: bin.join("kwokctl"),
            kubectl: bin.join("kubectl"),
        }
    }

    /// The directory holding them all.
    pub fn dir(&self) -> &Path {
        self.kwokctl.parent().unwrap_or(Path::new("."))
    }

    fn all(&self) -> [&Path; 7] {
        [
            &self.kube_apiserver,
            &self.kube_controller_manager,
            &self.kube_scheduler,
            &self.etcd,
            &self.kwok,
            &self.kwokctl,
            &self.kubectl,
        ]
    }
}

/// The `-ldflags` upstream's build sets (hack/lib/version.sh), on both version packages.
pub fn kubernetes_ldflags() -> String {
    let (major, minor) = major_minor(KUBERNETES_VERSION);
    let mut flags = String::from("all=-s -w");
    for package in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (name, value) in [
            ("gitVersion", KUBERNETES_VERSION),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", KUBERNETES_BUILD_DATE),
            // The proxy has no commit hash; unset, it would read `$Format:%H$`.
            ("gitCommit", ""),
        ] {
            flags.push_str(&format!(" -X {package}.{name}={value}"));
        }
    }
    flags
}

/// `("1", "34")` for `v1.34.4`.
fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.trim_start_matches('v').split('.');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

fn etcd_ldflags() -> String {
    // Without it etcd reports "Git SHA: Not provided"; the proxy gives the tag only.
    format!("-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}")
}

/// Names the build: the versions plus a digest of everything that shapes it.
pub fn version_key() -> String {
    let sources = [
        K8S_GO_MOD,
        K8S_GO_SUM,
        K8S_TOOLS,
        ETCD_GO_MOD,
        ETCD_GO_SUM,
        ETCD_TOOLS,
        KWOK_GO_MOD,
        KWOK_GO_SUM,
        KWOK_TOOLS,
    ];
    let ldflags = [kubernetes_ldflags(), etcd_ldflags()];
    let parts: Vec<&[u8]> = sources
        .iter()
        .map(|s| s.as_bytes())
        .chain(ldflags.iter().map(|s| s.as_bytes()))
        .collect();
    format!(
        "{KUBERNETES_VERSION}-etcd{ETCD_VERSION}-kwok{KWOK_VERSION}-{}",
        &digest(&parts)[..12]
    )
}

fn k8s_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("k8s")
}

fn build_dir(cache_dir: &Path) -> PathBuf {
    k8s_dir(cache_dir).join(version_key())
}

fn marker(build_dir: &Path) -> PathBuf {
    build_dir.join("bin").join(".built")
}

/// The binaries if this build is already cached.
fn built(cache_dir: &Path) -> Option<Binaries> {
    let dir = build_dir(cache_dir);
    marker(&dir)
        .exists()
        .then(|| Binaries::in_dir(&dir.join("bin")))
}

/// Builds every binary once per machine, cached under `cache_dir/k8s/<version-key>/bin`.
/// Safe to call from several processes at once: the first builds, the others wait.
pub fn build(cache_dir: &Path) -> Result<Binaries, LocalError> {
    if let Some(binaries) = built(cache_dir) {
        return Ok(binaries);
    }
    let dir = build_dir(cache_dir);
    std::fs::create_dir_all(&dir).map_err(|e| LocalError::io(&dir, e))?;
    let _lock = FileLock::exclusive(&dir.join("build.lock"), SETUP_WAIT)?;
    if let Some(binaries) = built(cache_dir) {
        return Ok(binaries);
    }
    let go = find_go("Kubernetes")?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| LocalError::io(&bin, e))?;
    eprintln!(
        "dynamo-conformance: building Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION} and kwok {KWOK_VERSION} \
         from the Go module proxy into {} (first run on this machine only, about 6 minutes)",
        bin.display()
    );
    let started = Instant::now();
    let steps = [
        GoModule {
            name: "kubernetes",
            files: [K8S_GO_MOD, K8S_GO_SUM, K8S_TOOLS],
            ldflags: kubernetes_ldflags(),
            output: format!("{}/", bin.display()),
            packages: &[
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler",
                "k8s.io/kubernetes/cmd/kubectl",
            ],
        },
        GoModule {
            name: "etcd",
            files: [ETCD_GO_MOD, ETCD_GO_SUM, ETCD_TOOLS],
            ldflags: etcd_ldflags(),
            output: bin.join("etcd").display().to_string(),
            packages: &["go.etcd.io/etcd/server/v3"],
        },
        GoModule {
            name: "kwok",
            files: [KWOK_GO_MOD, KWOK_GO_SUM, KWOK_TOOLS],
            ldflags: "-s -w".into(),
            output: format!("{}/", bin.display()),
            packages: &["sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok/cmd/kwokctl"],
        },
    ];
    for module in steps {
        let step = Instant::now();
        let name = module.name;
        eprintln!(
            "dynamo-conformance: building {} ...",
            module.packages.join(" ")
        );
        let work = dir.join("src").join(name);
        std::fs::create_dir_all(&work).map_err(|e| LocalError::io(&work, e))?;
        for (file, text) in ["go.mod", "go.sum", "tools.go"]
            .into_iter()
            .zip(module.files)
        {
            let path = work.join(file);
            std::fs::write(&path, text).map_err(|e| LocalError::io(&path, e))?;
        }
        // Fetches the modules the first time; then everything is in GOMODCACHE.
        command::run(
            go_command(&go, &work).args(["mod", "tidy"]),
            &format!(
                "resolve the {name} modules (go mod tidy in {})",
                work.display()
            ),
            Bounds::long(),
        )?;
        // One `go build` per module, so shared packages compile once.
        command::run(
            go_command(&go, &work)
                .args(["build", "-trimpath"])
                .arg(format!("-ldflags={}", module.ldflags))
                .arg(format!("-o={}", module.output))
                .args(module.packages),
            &format!("build {name} (go build in {})", work.display()),
            Bounds::long(),
        )?;
        eprintln!(
            "dynamo-conformance: built {name} in {}",
            minutes(step.elapsed())
        );
    }
    let binaries = Binaries::in_dir(&bin);
    if let Some(missing) = binaries.all().into_iter().find(|p| !p.is_file()) {
        return Err(CommandError {
            what: "build the local cluster's binaries".into(),
            detail: format!("{} is missing after the build", missing.display()),
        }
        .into());
    }
    let marker = marker(&dir);
    std::fs::write(&marker, version_key()).map_err(|e| LocalError::io(&marker, e))?;
    eprintln!(
        "dynamo-conformance: built the local cluster's binaries in {}",
        minutes(started.elapsed())
    );
    Ok(binaries)
}

/// A wrapper module and what to build from it.
struct GoModule {
    name: &'static str,
    /// `go.mod`, `go.sum`, `tools.go`.
    files: [&'static str; 3],
    ldflags: String,
    /// A file, or a directory with a trailing `/`.
    output: String,
    packages: &'static [&'static str],
}

/// A running kwokctl cluster.
///
/// Nodes: the binary runtime starts the kwok controller with `--manage-all-nodes=true`, so kwok
/// manages every Node created through the API (it marks it Ready, keeps its heartbeats, and runs
/// the pods bound to it), whatever its labels. Still give nodes the annotation
/// `kwok.x-k8s.io/node: fake`: it is what kwok's other runtimes select on
/// (`--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake`), so the nodes stay managed if
/// that ever changes. Put a `kwok.x-k8s.io/node=fake:NoSchedule` taint on them if only pods that
/// tolerate it should land there. kwok's own node stages are in use, given explicitly
/// ([`node_stages`]).
///
/// `fixtures/local/k8s/kwokctl.yaml` turns on kwok's PortForward and Logs CRDs (kwokctl installs
/// them) for the bridge, and replaces kwok's pod stages so that a Dynamo pod is Ready only while its
/// process passes the pod's readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCluster {
    /// The kwokctl cluster's name.
    pub name: String,
    /// An admin kubeconfig (client certificate) for the API server on 127.0.0.1.
    pub kubeconfig: PathBuf,
    /// The API server's version, e.g. `v1.34.4`.
    pub kubernetes_version: String,
    /// kwokctl's directory for the cluster: `kwok.yaml`, `kubeconfig.yaml`, `pki/`, `logs/`, `pids/`.
    pub workdir: PathBuf,
}

/// `KWOK_WORKDIR`: kwokctl keeps each cluster in `clusters/<name>` below it.
fn kwok_workdir(cache_dir: &Path) -> PathBuf {
    k8s_dir(cache_dir).join("clusters")
}

pub(crate) fn cluster_dir(cache_dir: &Path) -> PathBuf {
    kwok_workdir(cache_dir).join("clusters").join(CLUSTER_NAME)
}

fn cluster_lock(cache_dir: &Path) -> Result<FileLock, LocalError> {
    let path = kwok_workdir(cache_dir).join(format!("{CLUSTER_NAME}.lock"));
    Ok(FileLock::exclusive(&path, SETUP_WAIT)?)
}

/// The file beside a cluster recording which kwokctl settings (stages, CRDs) created it.
const CONFIG_STAMP: &str = "dynamo-conformance-config.sha256";

fn config_digest(config: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(config.as_bytes()))
}

/// kwok's own node stages, from its module: `node-initialize` and `node-heartbeat-with-lease`.
///
/// Given explicitly because kwok v0.7.0 picks its default heartbeat by `node-lease-duration-seconds
/// == 0`, the reverse of its intent (`pkg/kwok/cmd/root.go`), so a cluster with node leases got
/// the lease-less heartbeat: a status write per node every 20 s, most of an idle cluster's API
/// traffic. With leases (kwokctl's 200 s) the status is refreshed every 10 minutes, as kwokctl
/// itself configures it when it writes the stages. Read once per build from the module cache (the
/// kwok build fetched the module), then kept beside the binaries.
fn node_stages(binaries: &Binaries) -> Result<String, LocalError> {
    let bin = binaries.dir();
    let kept = bin.join("kwok-node-stages.yaml");
    if let Ok(text) = std::fs::read_to_string(&kept) {
        return Ok(text);
    }
    let work = bin.parent().unwrap_or(bin).join("src").join("kwok");
    std::fs::create_dir_all(&work).map_err(|e| LocalError::io(&work, e))?;
    let go = find_go("Kubernetes")?;
    let out = command::run(
        go_command(&go, &work).args([
            "mod",
            "download",
            "-json",
            &format!("sigs.k8s.io/kwok@{KWOK_VERSION}"),
        ]),
        &format!("find kwok {KWOK_VERSION}'s node stages (go mod download)"),
        Bounds::long(),
    )?;
    let module = serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["Dir"].as_str().map(PathBuf::from))
        .ok_or_else(|| CommandError {
            what: format!("find kwok {KWOK_VERSION}'s module directory"),
            detail: format!("go mod download -json printed no Dir: {out}"),
        })?;
    let stages = [
        "fast/node-initialize.yaml",
        "heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    ]
    .iter()
    .map(|file| {
        let path = module.join("kustomize/stage/node").join(file);
        std::fs::read_to_string(&path).map_err(|e| LocalError::io(&path, e))
    })
    .collect::<Result<Vec<_>, _>>()?;
    let text = format!(
        "# kwok {KWOK_VERSION}'s node stages, read from its module by dynamo-conformance.\n---\n{}",
        stages.join("\n---\n")
    );
    std::fs::write(&kept, &text).map_err(|e| LocalError::io(&kept, e))?;
    Ok(text)
}

/// The kwokctl settings: `fixtures/local/k8s/kwokctl.yaml`, then kwok's node stages.
fn kwokctl_config(binaries: &Binaries) -> Result<String, LocalError> {
    Ok(format!("{KWOKCTL_CONFIG}---\n{}", node_stages(binaries)?))
}

fn config_path(cache_dir: &Path) -> PathBuf {
    kwok_workdir(cache_dir).join("kwokctl.yaml")
}

/// A kwokctl command for our cluster, run with the tools in `bin`.
fn kwokctl(
    bin: &Path,
    cache_dir: &Path,
    settings: Option<&str>,
    args: &[&str],
) -> Result<Command, LocalError> {
    // Our settings instead of ~/.kwok/kwok.yaml (a cluster that exists keeps its own copy).
    let config = config_path(cache_dir);
    if settings.is_some() || !config.exists() {
        std::fs::create_dir_all(kwok_workdir(cache_dir))
            .and_then(|()| std::fs::write(&config, settings.unwrap_or(KWOKCTL_CONFIG)))
            .map_err(|e| LocalError::io(&config, e))?;
    }
    // kwokctl checks the API server with the `kubectl` it finds first on PATH, else downloads one.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .map_err(|e| CommandError {
        what: "put the built kubectl on PATH".into(),
        detail: e.to_string(),
    })?;
    let mut command = Command::new(bin.join("kwokctl"));
    command
        .env("KWOK_WORKDIR", kwok_workdir(cache_dir))
        .env("PATH", path)
        .arg(format!("--config={}", config.display()))
        .args(args)
        .arg(format!("--name={CLUSTER_NAME}"));
    Ok(command)
}

/// Creates (or reuses, when it is running and healthy) the cluster, building the binaries first.
/// Safe to call from several processes at once.
pub fn up(cache_dir: &Path) -> Result<LocalCluster, LocalError> {
    let binaries = build(cache_dir)?;
    let bin = binaries.dir();
    let _lock = cluster_lock(cache_dir)?;
    let dir = cluster_dir(cache_dir);
    let settings = kwokctl_config(&binaries)?;
    if dir.join("kwok.yaml").exists() {
        // Reuse only a cluster of these very binaries that answers.
        let ours = apiserver_of(&dir).as_deref() == Some(binaries.kube_apiserver.as_path())
            && std::fs::read_to_string(dir.join(CONFIG_STAMP)).ok()
                == Some(config_digest(&settings));
        if ours && probe(bin, cache_dir).is_ok() {
            return describe(cache_dir, &binaries.kube_apiserver);
        }
        eprintln!(
            "dynamo-conformance: replacing the stale local cluster in {}",
            dir.display()
        );
        delete(bin, cache_dir)?;
    }
    eprintln!(
        "dynamo-conformance: starting the local cluster {CLUSTER_NAME} (Kubernetes {KUBERNETES_VERSION}, kwok nodes)"
    );
    let started = Instant::now();
    let flag = |name: &str, p: &Path| format!("--{name}={}", p.display());
    command::run(
        kwokctl(bin, cache_dir, Some(&settings), &["create", "cluster"])?
            .arg("--runtime=binary")
            .arg(flag("kube-apiserver-binary", &binaries.kube_apiserver))
            .arg(flag(
                "kube-controller-manager-binary",
                &binaries.kube_controller_manager,
            ))
            .arg(flag("kube-scheduler-binary", &binaries.kube_scheduler))
            .arg(flag("etcd-binary", &binaries.etcd))
            .arg(flag("kwok-controller-binary", &binaries.kwok))
            // Else it derives one from the default route, and fails on a machine without one.
            // Not loopback (the `kubernetes` Endpoints refuse it): TEST-NET-1, routed nowhere.
            .arg(format!(
                "--extra-args=kube-apiserver=advertise-address={ADVERTISE_ADDRESS}"
            ))
            // Keep the user's ~/.kube/config untouched.
            .arg("--kubeconfig="),
        "create the local cluster (kwokctl create cluster)",
        Bounds::within(CREATE_WAIT),
    )?;
    wait_ready(bin, cache_dir, READY_WAIT)?;
    let stamp = dir.join(CONFIG_STAMP);
    std::fs::write(&stamp, config_digest(&settings)).map_err(|e| LocalError::io(&stamp, e))?;
    let cluster = describe(cache_dir, &binaries.kube_apiserver)?;
    eprintln!(
        "dynamo-conformance: local cluster up in {:.1} s; kubeconfig {}",
        started.elapsed().as_secs_f64(),
        cluster.kubeconfig.display()
    );
    Ok(cluster)
}

/// The components' states, as `kwokctl get components -o wide` prints them.
fn components(bin: &Path, cache_dir: &Path) -> Result<Vec<(String, String)>, LocalError> {
    let out = command::run(
        &mut kwokctl(
            bin,
            cache_dir,
            None,
            &["get", "components", "--output=wide"],
        )?,
        "list the local cluster's components",
        Bounds::within(QUERY_WAIT),
    )?;
    Ok(parse_components(&out))
}

/// `NAME STATUS` rows, the header skipped.
fn parse_components(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.to_string(), fields.next()?.to_string()))
        })
        .filter(|(name, _)| name != "NAME")
        .collect()
}

/// Every component we start, and each of them running (kwokctl's `Ready` means only that).
fn all_running(components: &[(String, String)]) -> bool {
    let wanted = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok-controller",
    ];
    wanted
        .iter()
        .all(|w| components.iter().any(|(name, _)| name == w))
        && components.iter().all(|(_, status)| status == "Ready")
}

/// Ok when every process runs and the API server answers `/readyz`; else what was seen.
fn probe(bin: &Path, cache_dir: &Path) -> Result<(), String> {
    let components = components(bin, cache_dir).map_err(|e| e.to_string())?;
    if !all_running(&components) {
        let seen: Vec<String> = components
            .iter()
            .map(|(name, status)| format!("{name} {status}"))
            .collect();
        return Err(if seen.is_empty() {
            "no components".into()
        } else {
            seen.join(", ")
        });
    }
    let kubeconfig = cluster_dir(cache_dir).join("kubeconfig.yaml");
    if !kubeconfig.is_file() {
        return Err(format!("no {}", kubeconfig.display()));
    }
    let answer = command::run(
        Command::new(bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--request-timeout=5s", "get", "--raw", "/readyz"]),
        "ask the API server /readyz",
        Bounds::within(QUERY_WAIT),
    )
    .map_err(|e| e.to_string())?;
    match answer.trim() {
        "ok" => Ok(()),
        other => Err(format!("/readyz answered {other:?}")),
    }
}

/// Polls until the cluster answers, at most `timeout`.
fn wait_ready(bin: &Path, cache_dir: &Path, timeout: Duration) -> Result<(), LocalError> {
    let started = Instant::now();
    loop {
        let last = match probe(bin, cache_dir) {
            Ok(()) => return Ok(()),
            Err(seen) => seen,
        };
        if started.elapsed() >= timeout {
            return Err(LocalError::NotReady {
                waited: timeout,
                detail: last,
                logs: cluster_dir(cache_dir).join("logs"),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn describe(cache_dir: &Path, kube_apiserver: &Path) -> Result<LocalCluster, LocalError> {
    // `Kubernetes v1.34.4`.
    let out = command::run(
        Command::new(kube_apiserver).arg("--version"),
        "read kube-apiserver's version",
        Bounds::within(QUERY_WAIT),
    )?;
    let workdir = cluster_dir(cache_dir);
    Ok(LocalCluster {
        name: CLUSTER_NAME.into(),
        kubeconfig: workdir.join("kubeconfig.yaml"),
        kubernetes_version: out.split_whitespace().last().unwrap_or_default().into(),
        workdir,
    })
}

/// The kube-apiserver binary a cluster was created with, from its `kwok.yaml`.
fn apiserver_of(dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join("kwok.yaml")).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("kubeApiserverBinary:"))
        .map(|v| PathBuf::from(v.trim().trim_matches(['"', '\''])))
        .next()
}

/// The `bin` directory of this build, else of any earlier build still in the cache.
fn any_bin(cache_dir: &Path) -> Option<PathBuf> {
    if let Some(b) = built(cache_dir) {
        return Some(b.dir().to_path_buf());
    }
    std::fs::read_dir(k8s_dir(cache_dir))
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|bin| bin.join(".built").exists())
}

/// The running cluster, if any, without creating one.
pub fn status(cache_dir: &Path) -> Result<Option<LocalCluster>, LocalError> {
    let dir = cluster_dir(cache_dir);
    if !dir.join("kwok.yaml").exists() {
        return Ok(None);
    }
    let Some(bin) = any_bin(cache_dir) else {
        return Ok(None);
    };
    let _lock = cluster_lock(cache_dir)?;
    if !dir.join("kwok.yaml").exists() || probe(&bin, cache_dir).is_err() {
        return Ok(None);
    }
    let apiserver = apiserver_of(&dir)
        .filter(|p| p.is_file())
        .unwrap_or_else(|| bin.join("kube-apiserver"));
    describe(cache_dir, &apiserver).map(Some)
}

/// Deletes the cluster if there is one, waiting until its processes are gone; whether there was one.
pub fn down(cache_dir: &Path) -> Result<bool, LocalError> {
    let _lock = cluster_lock(cache_dir)?;
    let dir = cluster_dir(cache_dir);
    if !dir.exists() {
        return Ok(false);
    }
    match any_bin(cache_dir) {
        Some(bin) => delete(&bin, cache_dir)?,
        None => {
            // No kwokctl left to ask: stop the processes ourselves, etcd last (an API server
            // whose etcd is gone retries for a minute), then forget the cluster.
            let (etcd, rest): (Vec<_>, Vec<_>) = cluster_pids(&dir)
                .into_iter()
                .partition(|(name, _)| name == "etcd");
            for group in [rest, etcd] {
                let pids: Vec<u32> = group.into_iter().map(|(_, pid)| pid).collect();
                for &pid in &pids {
                    // SAFETY: plain signal to a pid kwokctl recorded for this cluster.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                wait_gone(&pids, &dir)?;
            }
            std::fs::remove_dir_all(&dir).map_err(|e| LocalError::io(&dir, e))?;
        }
    }
    Ok(true)
}

/// `kwokctl delete cluster`, then waits for the processes it signalled.
fn delete(bin: &Path, cache_dir: &Path) -> Result<(), LocalError> {
    let dir = cluster_dir(cache_dir);
    let pids: Vec<u32> = cluster_pids(&dir).into_iter().map(|(_, pid)| pid).collect();
    // It removes its context from this kubeconfig (an empty value is refused); none is ever written.
    let contexts = kwok_workdir(cache_dir).join("no-such-kubeconfig.yaml");
    command::run(
        kwokctl(bin, cache_dir, None, &["delete", "cluster"])?
            .arg(format!("--kubeconfig={}", contexts.display())),
        "delete the local cluster (kwokctl delete cluster)",
        Bounds::within(QUERY_WAIT),
    )?;
    // kwokctl returns before its processes exit.
    wait_gone(&pids, &dir)
}

/// The components and pids kwokctl recorded in `pids/<component>.pid` (no trailing newline).
pub(crate) fn cluster_pids(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_stem()?.to_string_lossy().into_owned();
            let pid = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process started for the cluster in `dir`.
fn alive_in(pid: u32, dir: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
    !zombie && ours
}

/// Waits (bounded) until none of `pids` runs; kills stragglers after the bound.
fn wait_gone(pids: &[u32], dir: &Path) -> Result<(), LocalError> {
    let started = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive_in(p, dir)).collect();
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= STOP_WAIT {
            for &pid in &left {
                // SAFETY: plain signal to a process whose command line names this cluster.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_secs(2));
            let left: Vec<u32> = left.into_iter().filter(|&p| alive_in(p, dir)).collect();
            if left.is_empty() {
                return Ok(());
            }
            return Err(LocalError::StopTimeout {
                pids: left,
                waited: STOP_WAIT,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldflags_set_every_version_variable_on_both_packages() {
        let flags = kubernetes_ldflags();
        assert!(flags.starts_with("all=-s -w "));
        for package in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            assert!(flags.contains(&format!("-X {package}.gitVersion=v1.34.4 ")));
            assert!(flags.contains(&format!("-X {package}.gitMajor=1 ")));
            assert!(flags.contains(&format!("-X {package}.gitMinor=34 ")));
            assert!(flags.contains(&format!("-X {package}.gitCommit=")));
        }
    }

    #[test]
    fn version_key_names_the_versions() {
        let key = version_key();
        assert!(key.starts_with("v1.34.4-etcdv3.6.16-kwokv0.7.0-"), "{key}");
        assert_eq!(key, version_key());
    }

    #[test]
    fn wrapper_modules_pin_the_versions() {
        assert!(K8S_GO_MOD.contains("require k8s.io/kubernetes v1.34.4"));
        assert!(K8S_GO_MOD.contains("k8s.io/client-go => k8s.io/client-go v0.34.4"));
        assert!(ETCD_GO_MOD.contains("go.etcd.io/etcd/server/v3 v3.6.16"));
        assert!(KWOK_GO_MOD.contains("sigs.k8s.io/kwok v0.7.0"));
        assert!(KWOKCTL_CONFIG.contains("bindAddress: 127.0.0.1"));
        assert!(KWOKCTL_CONFIG.contains(&format!("kubeVersion: {KUBERNETES_VERSION}")));
    }

    #[test]
    fn components_table_is_parsed_and_judged() {
        let table = "NAME                      STATUS\netcd                      Ready\n\
                     kube-apiserver            Ready\nkube-controller-manager   Ready\n\
                     kube-scheduler            Ready\nkwok-controller           Ready\n";
        let parsed = parse_components(table);
        assert_eq!(parsed.len(), 5);
        assert!(all_running(&parsed));
        let stopped = table.replace("kube-scheduler            Ready", "kube-scheduler Stopped");
        assert!(!all_running(&parse_components(&stopped)));
        assert!(!all_running(&parse_components("NAME STATUS\netcd Ready\n")));
    }
}
