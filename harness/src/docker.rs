//! The Docker engine the kind provider runs on: reached with bollard, started when installed but stopped.
//!
//! An engine that answers is used as it is. One that is installed but not running is started:
//! with `systemctl` where systemd runs the machine, else as background processes (containerd,
//! then dockerd) whose pids and logs are kept under `<cache>/docker/`, so that `kind down` stops
//! exactly what the suite started and nothing else. On a host whose capability bounding set lacks
//! a capability Docker grants privileged containers (CAP_SYS_RESOURCE on this project's VMs), the
//! engine the suite starts gets an OCI runtime that drops those capabilities
//! (`fixtures/kind/docker/runc-capfilter`), or kind's privileged nodes could not start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::command::{self, Bounds};
use crate::debian::{self, Package};

/// The name under which the engine the suite starts knows the capability-dropping runtime.
pub const CAPFILTER_RUNTIME: &str = "dynamo-conformance-runc";
const CAPFILTER_SCRIPT: &str = include_str!("../../fixtures/kind/docker/runc-capfilter");
/// How long a started daemon may take to answer.
const START_WAIT: Duration = Duration::from_secs(90);
/// How long a daemon may take to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(60);
/// How long one API call may take before the engine counts as not answering.
const PING_WAIT: Duration = Duration::from_secs(5);

/// Errors reaching or starting the engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No Docker engine is installed.
    #[error(
        "no Docker engine is installed (the kind provider runs its nodes as Docker containers); install it: on Debian or Ubuntu `sudo apt-get install -y docker.io containerd runc`, elsewhere https://docs.docker.com/engine/install/"
    )]
    NotInstalled,
    /// Installed but not running, and this process may not start it.
    #[error(
        "the Docker engine is installed but not running, and only root can start it; run `sudo systemctl start docker` (or run dynamo-conformance as root)"
    )]
    NotRunning,
    /// The engine was started but did not answer.
    #[error(
        "the Docker engine did not answer within {waited:?} after {what}; last log lines: {log_tail} (log {log})"
    )]
    Start {
        /// What was started.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last lines of its log.
        log_tail: String,
        /// The log file.
        log: PathBuf,
    },
    /// The running engine cannot start privileged containers on this host.
    #[error(
        "this host's capability bounding set lacks {missing}, which Docker grants privileged containers, so the running Docker engine (default runtime {runtime}) cannot start kind's nodes; stop it (`sudo systemctl stop docker`, or kill dockerd) and dynamo-conformance starts its own engine with a runtime that drops those capabilities"
    )]
    Capabilities {
        /// The missing capabilities.
        missing: String,
        /// The engine's default runtime.
        runtime: String,
    },
    /// An API call failed.
    #[error("Docker: cannot {what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// The error.
        source: bollard::errors::Error,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A Debian package the runtime shim needs is missing.
    #[error(transparent)]
    Debian(#[from] debian::DebianError),
    /// A command failed.
    #[error(transparent)]
    Command(#[from] command::CommandError),
}

impl DockerError {
    /// A failed API call.
    pub fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let what = what.into();
        move |source| DockerError::Api { what, source }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DockerError + '_ {
    move |source| DockerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A reachable engine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The API client, at the engine's own API version.
    pub docker: Docker,
    /// The engine's version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// Whether the suite started it (then `kind down` stops it).
    pub started_by_suite: bool,
}

/// The daemons the suite started, as recorded in `<cache>/docker/engine.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartedDaemons {
    /// containerd's pid, if the suite started it.
    pub containerd: Option<u32>,
    /// dockerd's pid.
    pub dockerd: Option<u32>,
}

fn dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("docker")
}

fn state_path(cache_dir: &Path) -> PathBuf {
    dir(cache_dir).join("engine.json")
}

/// The daemons the suite started and that still run.
pub fn started(cache_dir: &Path) -> StartedDaemons {
    let recorded: StartedDaemons = std::fs::read_to_string(state_path(cache_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    StartedDaemons {
        containerd: recorded.containerd.filter(|&p| alive_as(p, "containerd")),
        dockerd: recorded.dockerd.filter(|&p| alive_as(p, "dockerd")),
    }
}

/// Whether `pid` runs the program `name` (not a reused pid).
fn alive_as(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
}

/// The engine's client, if one answers (at `DOCKER_HOST` or the default socket).
pub async fn reach() -> Option<Engine> {
    let docker = Docker::connect_with_local_defaults().ok()?;
    let version = tokio::time::timeout(PING_WAIT, docker.version())
        .await
        .ok()?
        .ok()?;
    let docker = docker.negotiate_version().await.ok()?;
    Some(Engine {
        docker,
        version: version.version.unwrap_or_default(),
        started_by_suite: false,
    })
}

/// Capabilities this host lacks in its bounding set, by name (`cap_sys_resource`), up to the
/// highest the kernel knows.
pub fn missing_capabilities() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(bounding) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Vec::new();
    };
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(40);
    (0..=last.min(63))
        .filter(|bit| bounding & (1 << bit) == 0)
        .map(capability_name)
        .collect()
}

/// Linux's name of capability `bit` (include/uapi/linux/capability.h).
fn capability_name(bit: u32) -> String {
    const NAMES: [&str; 41] = [
        "cap_chown",
        "cap_dac_override",
        "cap_dac_read_search",
        "cap_fowner",
        "cap_fsetid",
        "cap_kill",
        "cap_setgid",
        "cap_setuid",
        "cap_setpcap",
        "cap_linux_immutable",
        "cap_net_bind_service",
        "cap_net_broadcast",
        "cap_net_admin",
        "cap_net_raw",
        "cap_ipc_lock",
        "cap_ipc_owner",
        "cap_sys_module",
        "cap_sys_rawio",
        "cap_sys_chroot",
        "cap_sys_ptrace",
        "cap_sys_pacct",
        "cap_sys_admin",
        "cap_sys_boot",
        "cap_sys_nice",
        "cap_sys_resource",
        "cap_sys_time",
        "cap_sys_tty_config",
        "cap_mknod",
        "cap_lease",
        "cap_audit_write",
        "cap_audit_control",
        "cap_setfcap",
        "cap_mac_override",
        "cap_mac_admin",
        "cap_syslog",
        "cap_wake_alarm",
        "cap_block_suspend",
        "cap_audit_read",
        "cap_perfmon",
        "cap_bpf",
        "cap_checkpoint_restore",
    ];
    NAMES
        .get(bit as usize)
        .map_or_else(|| format!("capability {bit}"), |n| n.to_string())
}

/// The engine, started first when it is installed but not running. Safe from several processes
/// at once (a lock under `<cache>/docker`).
pub async fn ensure(cache_dir: &Path) -> Result<Engine, DockerError> {
    if let Some(engine) = reach().await {
        return checked(engine, cache_dir).await;
    }
    let home = dir(cache_dir);
    std::fs::create_dir_all(&home).map_err(io(&home))?;
    let cache = cache_dir.to_path_buf();
    tokio::task::spawn_blocking(move || start(&cache))
        .await
        .expect("starting the engine does not panic")?;
    let waited = Instant::now();
    loop {
        if let Some(engine) = reach().await {
            return checked(engine, cache_dir).await;
        }
        if waited.elapsed() >= START_WAIT {
            let log = home.join("dockerd.log");
            return Err(DockerError::Start {
                what: "starting dockerd".into(),
                waited: START_WAIT,
                log_tail: crate::dynamo::log_tail(&log, 3),
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Refuses an engine that cannot start privileged containers on this host.
async fn checked(mut engine: Engine, cache_dir: &Path) -> Result<Engine, DockerError> {
    engine.started_by_suite = started(cache_dir).dockerd.is_some();
    let missing = missing_capabilities();
    if missing.is_empty() {
        return Ok(engine);
    }
    let info = engine
        .docker
        .info()
        .await
        .map_err(DockerError::api("read the engine's info"))?;
    let runtime = info.default_runtime.unwrap_or_else(|| "runc".into());
    if runtime == CAPFILTER_RUNTIME {
        return Ok(engine);
    }
    Err(DockerError::Capabilities {
        missing: missing.join(", "),
        runtime,
    })
}

/// Starts the installed engine: through systemd where it runs the machine, else containerd and
/// dockerd as background processes (recorded so that [`stop`] finds them).
fn start(cache_dir: &Path) -> Result<(), DockerError> {
    let _lock = crate::dynamo::lock::FileLock::exclusive(
        &dir(cache_dir).join("start.lock"),
        Duration::from_secs(180),
    )
    .map_err(|e| command::CommandError {
        what: "take the Docker start lock".into(),
        detail: e.to_string(),
    })?;
    if started(cache_dir).dockerd.is_some() {
        return Ok(());
    }
    let Some(dockerd) = command::locate("dockerd") else {
        return Err(DockerError::NotInstalled);
    };
    if !command::is_root() {
        return Err(DockerError::NotRunning);
    }
    if Path::new("/run/systemd/system").is_dir() && command::locate("systemctl").is_some() {
        eprintln!("dynamo-conformance: starting the Docker engine (systemctl start docker)");
        command::run(
            Command::new("systemctl").args(["start", "docker"]),
            "start the Docker engine (systemctl start docker)",
            Bounds::within(START_WAIT),
        )?;
        return Ok(());
    }
    let home = dir(cache_dir);
    let mut daemons = StartedDaemons::default();
    let containerd_socket = Path::new("/run/containerd/containerd.sock");
    let containerd_answers = command::locate("ctr").is_some_and(|ctr| {
        command::run(
            Command::new(ctr).arg("version"),
            "ask containerd its version",
            Bounds::within(PING_WAIT),
        )
        .is_ok()
    });
    if !containerd_answers {
        let Some(containerd) = command::locate("containerd") else {
            return Err(DockerError::NotInstalled);
        };
        eprintln!(
            "dynamo-conformance: starting containerd (log {})",
            home.join("containerd.log").display()
        );
        daemons.containerd = Some(spawn_daemon(
            Command::new(containerd),
            &home.join("containerd.log"),
        )?);
        let started = Instant::now();
        while !containerd_socket.exists() && started.elapsed() < START_WAIT {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut daemon = Command::new(dockerd);
    if containerd_socket.exists() {
        daemon.arg(format!("--containerd={}", containerd_socket.display()));
    }
    let missing = missing_capabilities();
    if !missing.is_empty() {
        let config = capfilter_config(cache_dir)?;
        eprintln!(
            "dynamo-conformance: this host lacks {}; the Docker engine gets the runtime {CAPFILTER_RUNTIME}, which drops them from privileged containers",
            missing.join(", ")
        );
        daemon.arg(format!("--config-file={}", config.display()));
    }
    eprintln!(
        "dynamo-conformance: starting dockerd (log {})",
        home.join("dockerd.log").display()
    );
    daemons.dockerd = Some(spawn_daemon(daemon, &home.join("dockerd.log"))?);
    let state = state_path(cache_dir);
    let text = serde_json::to_string_pretty(&daemons).expect("plain data serializes");
    std::fs::write(&state, text).map_err(io(&state))?;
    Ok(())
}

/// Writes the capability-dropping runtime and a daemon configuration that makes it the default.
fn capfilter_config(cache_dir: &Path) -> Result<PathBuf, DockerError> {
    let tools = debian::ensure(
        &[
            Package {
                program: "jq",
                package: "jq",
            },
            Package {
                program: "capsh",
                package: "libcap2-bin",
            },
        ],
        cache_dir,
        "the Docker runtime that drops capabilities this host lacks",
    )?;
    let runc = command::locate("runc").ok_or(DockerError::NotInstalled)?;
    let home = dir(cache_dir);
    let script = home.join("runc-capfilter");
    let text = CAPFILTER_SCRIPT.replace("@RUNC@", &runc.display().to_string());
    std::fs::write(&script, text).map_err(io(&script))?;
    set_executable(&script)?;
    drop(tools);
    let config = home.join("daemon.json");
    let json = serde_json::json!({
        "runtimes": {CAPFILTER_RUNTIME: {"path": script}},
        "default-runtime": CAPFILTER_RUNTIME,
    });
    std::fs::write(&config, json.to_string()).map_err(io(&config))?;
    Ok(config)
}

fn set_executable(path: &Path) -> Result<(), DockerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(io(path))
}

/// Starts `command` in its own session, detached from this process, its output in `log`.
fn spawn_daemon(mut command: Command, log: &Path) -> Result<u32, DockerError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(io(log))?;
    let err = out.try_clone().map_err(io(log))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| command::CommandError {
            what: format!("start {:?}", command.get_program()),
            detail: e.to_string(),
        })?;
    Ok(child.id())
}

/// Stops the daemons the suite started (dockerd, then containerd), waiting until they exit;
/// what it stopped. An engine the suite did not start is left alone.
pub fn stop(cache_dir: &Path) -> Result<Vec<String>, DockerError> {
    let daemons = started(cache_dir);
    let mut stopped = Vec::new();
    for (name, pid) in [
        ("dockerd", daemons.dockerd),
        ("containerd", daemons.containerd),
    ] {
        let Some(pid) = pid else { continue };
        // SAFETY: a plain signal to a pid recorded by the suite and checked to run `name`.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while alive_as(pid, name) {
            if started.elapsed() >= STOP_WAIT {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        stopped.push(format!("{name} (pid {pid})"));
    }
    let state = state_path(cache_dir);
    if state.exists() {
        std::fs::remove_file(&state).map_err(io(&state))?;
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_follow_the_kernel_header() {
        assert_eq!(capability_name(0), "cap_chown");
        assert_eq!(capability_name(24), "cap_sys_resource");
        assert_eq!(capability_name(40), "cap_checkpoint_restore");
        assert_eq!(capability_name(41), "capability 41");
    }

    #[test]
    fn the_runtime_shim_runs_the_real_runc() {
        assert!(CAPFILTER_SCRIPT.contains("runc=@RUNC@"));
        assert!(CAPFILTER_SCRIPT.contains("exec \"$runc\" \"$@\""));
    }

    #[test]
    fn no_recorded_daemons_means_none_started() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(started(dir.path()), StartedDaemons::default());
        let state = state_path(dir.path());
        std::fs::create_dir_all(state.parent().unwrap()).unwrap();
        // A pid that is not dockerd (this test process) is not taken for one.
        std::fs::write(&state, format!("{{\"dockerd\": {}}}", std::process::id())).unwrap();
        assert_eq!(started(dir.path()).dockerd, None);
    }
}
