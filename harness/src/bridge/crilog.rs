//! A container log file in the CRI format kwok serves (`<RFC 3339 time> <stream> F <line>`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// A shared, append-only CRI log.
#[derive(Debug, Clone)]
pub struct CriLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

/// One log line in CRI format.
pub fn format_line(stream: &str, text: &str) -> String {
    format!(
        "{} {stream} F {text}\n",
        k8s_openapi::jiff::Timestamp::now()
    )
}

impl CriLog {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path) -> std::io::Result<CriLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(CriLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(File::create(path)?)),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line.
    pub fn write(&self, stream: &str, text: &str) {
        let line = format_line(stream, text.trim_end_matches(['\r', '\n']));
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }

    /// A note from the bridge itself, on stderr.
    pub fn note(&self, text: &str) {
        self.write("stderr", &format!("[dynamo-conformance bridge] {text}"));
    }

    /// Copies `pipe` into the log line by line until it closes.
    pub async fn copy(self, stream: &'static str, pipe: impl AsyncRead + Unpin) {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            self.write(stream, &line);
        }
    }

    /// The last `n` lines' texts, for messages, joined by ` | `.
    pub fn tail(&self, n: usize) -> String {
        self.tail_lines(n).join(" | ")
    }

    /// The last `n` non-empty lines' texts (CRI prefixes removed), oldest first.
    pub fn tail_lines(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cri_formatted() {
        let line = format_line("stdout", "hello world");
        let fields: Vec<&str> = line.trim_end().splitn(4, ' ').collect();
        assert!(
            fields[0].parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "{line}"
        );
        assert_eq!(&fields[1..], ["stdout", "F", "hello world"]);
    }

    #[test]
    fn the_tail_drops_the_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let log = CriLog::create(&dir.path().join("main.log")).unwrap();
        log.write("stdout", "one\n");
        log.note("two");
        assert_eq!(log.tail(5), "one | [dynamo-conformance bridge] two");
    }
}
