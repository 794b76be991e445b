//! External programs run to completion: bounded, both pipes drained, progress shown, failures with the output's tail.

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A program that could not be run, failed, or ran out of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not {what}: {detail}")]
pub struct CommandError {
    /// What was attempted, e.g. `build coredns (go build in /root/.cache/…)`.
    pub what: String,
    /// Its exit status and the last lines of its output, or why it did not start.
    pub detail: String,
}

/// How to run one command.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct Bounds {
    /// Kill it after this long (none: wait as long as it takes).
    pub timeout: Option<Duration>,
    /// While it runs, print a `still …` line this often (none: quiet).
    pub heartbeat: Option<Duration>,
    /// Echo each line of its output to stderr as it comes, after this prefix (none: quiet).
    pub echo: Option<&'static str>,
}

impl Bounds {
    /// At most `timeout`, quiet.
    pub fn within(timeout: Duration) -> Bounds {
        Bounds {
            timeout: Some(timeout),
            ..Bounds::default()
        }
    }

    /// A long step: no bound, a `still …` line every 30 s.
    pub fn long() -> Bounds {
        Bounds {
            heartbeat: Some(Duration::from_secs(30)),
            ..Bounds::default()
        }
    }

    /// The same bounds, each output line echoed after `prefix`.
    pub fn echoed(self, prefix: &'static str) -> Bounds {
        Bounds {
            echo: Some(prefix),
            ..self
        }
    }
}

/// Runs `command` with stdin closed; its stdout, or an error naming `what` with the output's last
/// lines. Progress lines go to stderr, prefixed `dynamo-conformance:`.
pub fn run(command: &mut Command, what: &str, bounds: Bounds) -> Result<String, CommandError> {
    let failed = |detail: String| CommandError {
        what: what.to_string(),
        detail,
    };
    // A run killed mid-step (SIGKILL included) takes the step with it: no helm or build of a
    // dead run goes on changing the cluster or the cache. The thread blocks here until the child
    // ends, so only the process's death sends the signal.
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("{e} (running {:?})", command.get_program())))?;
    let pid = child.id();
    let start = crate::ledger::process_start(pid).unwrap_or_default();
    let program = command.get_program().to_string_lossy().into_owned();
    crate::ledger::record_process(
        crate::ledger::Action::Created,
        "command",
        pid,
        start,
        &program,
    );
    // Drain both pipes on threads so a chatty child never blocks.
    let stdout = drain(child.stdout.take(), bounds.echo);
    let stderr = drain(child.stderr.take(), bounds.echo);
    let started = Instant::now();
    let mut next_beat = bounds.heartbeat;
    let status = loop {
        match child.try_wait().map_err(|e| failed(e.to_string()))? {
            Some(status) => break Some(status),
            None if bounds.timeout.is_some_and(|t| started.elapsed() >= t) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => {
                if let (Some(beat), Some(every)) = (next_beat, bounds.heartbeat)
                    && started.elapsed() >= beat
                {
                    eprintln!(
                        "dynamo-conformance: still {what} ({})",
                        minutes(started.elapsed())
                    );
                    next_beat = Some(beat + every);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    crate::ledger::record_process(
        crate::ledger::Action::Ended,
        "command",
        pid,
        start,
        &program,
    );
    let stdout = stdout.join().unwrap_or_default();
    let mut output = stderr.join().unwrap_or_default();
    output.push_str(&stdout);
    let tail = tail(&output, 5);
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(failed(format!("{status}: {tail}"))),
        None => Err(failed(format!(
            "no answer within {:?}: {tail}",
            bounds.timeout.unwrap_or_default()
        ))),
    }
}

/// Reads `pipe` to its end on a thread, echoing each line after `echo` if given.
fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    echo: Option<&'static str>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let Some(pipe) = pipe else {
            return String::new();
        };
        let mut text = String::new();
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        while std::io::BufRead::read_until(&mut reader, b'\n', &mut line).is_ok_and(|n| n > 0) {
            let piece = String::from_utf8_lossy(&line);
            if let Some(prefix) = echo {
                let shown = piece.trim_end();
                if !shown.is_empty() {
                    eprintln!("{prefix}{shown}");
                }
            }
            text.push_str(&piece);
            line.clear();
        }
        text
    })
}

/// The last `lines` non-empty lines of `text`, joined with ` | `.
pub fn tail(text: &str, lines: usize) -> String {
    let mut tail: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .take(lines)
        .collect();
    if tail.is_empty() {
        return "<no output>".into();
    }
    tail.reverse();
    tail.join(" | ")
}

/// `4m 05s`.
pub fn minutes(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{}m {:02}s", secs / 60, secs % 60)
}

/// Whether this process runs as root (installs and the Docker engine need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The first `program` on `PATH`, else in the system directories.
pub fn locate(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin", "/bin"].map(Into::into))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("  \n", 2), "<no output>");
    }

    #[test]
    fn a_failure_names_the_step_and_the_output() {
        let err = run(
            Command::new("sh").args(["-c", "echo one; echo two >&2; exit 3"]),
            "count",
            Bounds::default(),
        )
        .unwrap_err();
        assert_eq!(err.what, "count");
        assert!(err.detail.contains("exit status: 3"), "{}", err.detail);
        assert!(err.detail.contains("two | one"), "{}", err.detail);
    }

    #[test]
    fn a_command_past_its_bound_is_killed() {
        let started = Instant::now();
        let err = run(
            Command::new("sleep").arg("30"),
            "wait",
            Bounds::within(Duration::from_millis(300)),
        )
        .unwrap_err();
        assert!(err.detail.starts_with("no answer within"), "{}", err.detail);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn stdout_is_returned() {
        let out = run(
            Command::new("sh").args(["-c", "printf hi"]),
            "greet",
            Bounds::default(),
        )
        .unwrap();
        assert_eq!(out, "hi");
    }
}
