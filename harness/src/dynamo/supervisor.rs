//! The long-lived process that owns a local deployment: starts it, publishes its state, stops it when unused.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

use super::deployment::{Plan, ProcessSpec};
use super::lock::FileLock;
use super::state::{DeploymentState, Phase, ProcessState};
use super::{DynamoError, log_tail};

/// How long a deployment nobody uses stays up (unless it lingers).
pub const IDLE_GRACE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(250);

/// What the supervisor is asked to run.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The deployment directory (state, locks, logs).
    pub dir: PathBuf,
    /// The processes.
    pub plan: Plan,
    /// The published state's fixed parts.
    pub template: DeploymentState,
    /// How long the graph may take to become ready.
    pub ready_timeout: Duration,
}

struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

fn spawn(spec: &ProcessSpec, logs: &Path) -> Result<Running, DynamoError> {
    let log = logs.join(format!("{}.log", spec.name));
    let out = File::create(&log).map_err(|e| DynamoError::io(&log, e))?;
    let err = out.try_clone().map_err(|e| DynamoError::io(&log, e))?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: prctl is async-signal-safe; it asks the kernel to end the child with the supervisor.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| DynamoError::Command {
        what: format!("start {}", spec.name),
        detail: format!("{}: {e}", spec.program.display()),
    })?;
    Ok(Running {
        name: spec.name.to_string(),
        child,
        log,
    })
}

fn exited(running: &mut [Running]) -> Option<String> {
    running.iter_mut().find_map(|r| match r.child.try_wait() {
        Ok(Some(status)) => Some(format!(
            "{} exited ({status}); its log ends: {}",
            r.name,
            log_tail(&r.log, 3)
        )),
        _ => None,
    })
}

fn stop_all(running: &mut [Running]) {
    for r in running.iter() {
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in running.iter_mut() {
        while Instant::now() < deadline && matches!(r.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}

/// Waits until `url` answers 200, a process exits, or the deadline passes.
async fn await_ok(
    url: &str,
    deadline: Instant,
    running: &mut [Running],
) -> Result<(), DynamoError> {
    let http = reqwest::Client::new();
    loop {
        if let Some(exit) = exited(running) {
            return Err(DynamoError::NotReady { detail: exit });
        }
        let last = match http.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("{url} answers {}", r.status()),
            Err(e) => format!("{url}: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(DynamoError::NotReady {
                detail: format!("waiting to start the next process; last seen: {last}"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last readiness observation, for the timeout message.
async fn observe_ready(http: &reqwest::Client, plan: &Plan, model: &str) -> Result<(), String> {
    let models: Value = http
        .get(format!("{}/v1/models", plan.frontend_url))
        .send()
        .await
        .map_err(|e| format!("frontend not answering: {e}"))?
        .json()
        .await
        .map_err(|e| format!("frontend /v1/models unreadable: {e}"))?;
    let listed = models["data"]
        .as_array()
        .is_some_and(|d| d.iter().any(|m| m["id"] == model));
    if !listed {
        return Err(format!(
            "frontend /v1/models does not list {model} yet: {models}"
        ));
    }
    let health = http
        .get(format!("{}/health", plan.frontend_url))
        .send()
        .await
        .map_err(|e| format!("frontend /health: {e}"))?
        .text()
        .await
        .unwrap_or_default();
    if let Some(missing) = plan
        .readiness
        .frontend_lists
        .iter()
        .find(|e| !health.contains(e.as_str()))
    {
        return Err(format!(
            "frontend /health does not list {missing} yet: {}",
            crate::openai::check::excerpt(&health, 200)
        ));
    }
    // Listed is not served: 0.4.1 lists the model before its completions route is registered.
    for (path, body) in [
        (
            "/v1/completions",
            serde_json::json!({"model": model, "prompt": "ready?", "max_tokens": 1}),
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 1}),
        ),
    ] {
        let response = http
            .post(format!("{}{path}", plan.frontend_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("frontend {path}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "frontend {path} answers {status}: {}",
                crate::openai::check::excerpt(&text, 120)
            ));
        }
    }
    for worker in &plan.workers {
        let response = http
            .get(format!("{}/health", worker.system_url))
            .send()
            .await
            .map_err(|e| format!("{} worker system port: {e}", worker.role.as_str()))?;
        if !response.status().is_success() {
            return Err(format!(
                "{} worker /health answers {}",
                worker.role.as_str(),
                response.status()
            ));
        }
    }
    Ok(())
}

/// Runs the deployment until it is stopped (SIGTERM/SIGINT) or, unless it lingers,
/// until no suite process has held a lease on it for [`IDLE_GRACE`].
pub fn supervise(assignment: Assignment) -> Result<(), DynamoError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DynamoError::io(&assignment.dir, e))?;
    let mut state = assignment.template.clone();
    state.supervisor_pid = std::process::id();
    state.phase = Phase::Starting;
    state.write(&assignment.dir)?;
    let logs = assignment.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| DynamoError::io(&logs, e))?;

    let mut running: Vec<Running> = Vec::new();
    let deadline = Instant::now() + assignment.ready_timeout;
    for spec in &assignment.plan.processes {
        let waited = spec
            .start_after
            .iter()
            .try_for_each(|url| runtime.block_on(await_ok(url, deadline, &mut running)));
        let spawned = waited.and_then(|()| spawn(spec, &logs));
        match spawned {
            Ok(r) => {
                state.processes.push(ProcessState {
                    name: r.name.clone(),
                    pid: r.child.id(),
                    log: r.log.clone(),
                    command: spec.command_line(),
                });
                running.push(r);
            }
            Err(e) => {
                stop_all(&mut running);
                state.phase = Phase::Failed;
                // The reader wraps the detail in NotReady again: keep only what happened.
                state.detail = Some(match &e {
                    DynamoError::NotReady { detail } => detail.clone(),
                    other => other.to_string(),
                });
                state.write(&assignment.dir)?;
                return Err(e);
            }
        }
    }
    state.write(&assignment.dir)?;

    let result = runtime.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(exit) = exited(&mut running) {
                return Err(exit);
            }
            let last = match observe_ready(&http, &assignment.plan, &state.model).await {
                Ok(()) => return Ok(()),
                Err(observed) => observed,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {:?}; last seen: {last}",
                    assignment.ready_timeout
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    if let Err(detail) = result {
        stop_all(&mut running);
        state.phase = Phase::Failed;
        state.detail = Some(detail.clone());
        state.write(&assignment.dir)?;
        return Err(DynamoError::NotReady { detail });
    }
    state.phase = Phase::Ready;
    state.write(&assignment.dir)?;

    let lease = assignment.dir.join("lease.lock");
    let held = runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(|e| DynamoError::io(&lease, e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| DynamoError::io(&lease, e))?;
        let mut idle_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(None),
                _ = int.recv() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if state.detail.is_none()
                && let Some(exit) = exited(&mut running)
            {
                state.detail = Some(exit);
                state.write(&assignment.dir)?;
            }
            if state.linger {
                continue;
            }
            match FileLock::try_exclusive(&lease)? {
                None => idle_since = None,
                Some(lock) => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= IDLE_GRACE {
                        return Ok::<_, DynamoError>(Some(lock));
                    }
                }
            }
        }
    })?;
    state.phase = Phase::Stopping;
    state.write(&assignment.dir)?;
    stop_all(&mut running);
    DeploymentState::remove(&assignment.dir);
    drop(held);
    Ok(())
}
