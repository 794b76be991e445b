//! Go programs from the Go module proxy, built through pinned wrapper modules and cached by content.
//!
//! A wrapper module is a `go.mod` that requires the upstream module at its release (and repeats
//! its `replace` directives, which a dependency's own `go.mod` cannot impose), a complete `go.sum`,
//! and a `tools.go` naming the commands, all kept under `fixtures/`. The build runs `go build`
//! with that `go.sum` read-only, so what is built is exactly what was pinned.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::command::{self, Bounds, CommandError};
use crate::dynamo::install::digest;
use crate::dynamo::lock::{FileLock, SETUP_WAIT};

/// Errors building a Go program.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    /// No Go toolchain was found.
    #[error(
        "Go (the `go` command, needed once to build {what}) not found; install Go 1.26 or newer from https://go.dev/dl/ into /usr/local/go, or put `go` on PATH"
    )]
    Missing {
        /// What needed it.
        what: String,
    },
    /// A file or directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `go build` failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The build lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::dynamo::DynamoError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GoError + '_ {
    move |source| GoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One `go build` of one wrapper module.
#[derive(Debug, Clone)]
pub struct GoProgram {
    /// A short name for progress lines and the cache directory, e.g. `coredns`.
    pub name: &'static str,
    /// What it is, for progress lines, e.g. `CoreDNS v1.12.1`.
    pub title: &'static str,
    /// The wrapper module's files, by path inside the module (`go.mod`, `go.sum`, `tools.go`, …).
    pub files: &'static [(&'static str, &'static str)],
    /// The packages to build (import paths, or `./dir` for a package of the wrapper module).
    pub packages: &'static [&'static str],
    /// The commands the build leaves in the output directory.
    pub outputs: &'static [&'static str],
    /// `-ldflags`.
    pub ldflags: String,
}

impl GoProgram {
    /// Names this build: its name and a digest of every input.
    pub fn key(&self) -> String {
        let mut parts: Vec<&[u8]> = Vec::new();
        for (path, text) in self.files {
            parts.push(path.as_bytes());
            parts.push(text.as_bytes());
        }
        for package in self.packages {
            parts.push(package.as_bytes());
        }
        parts.push(self.ldflags.as_bytes());
        format!("{}-{}", self.name, &digest(&parts)[..12])
    }

    /// The cached output directory, whether or not it is built yet.
    pub fn bin_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join("go").join(self.key()).join("bin")
    }

    /// The path of one of its outputs.
    pub fn output(&self, cache_dir: &Path, name: &str) -> PathBuf {
        self.bin_dir(cache_dir).join(name)
    }

    fn built(&self, cache_dir: &Path) -> bool {
        self.bin_dir(cache_dir).join(".built").exists()
    }
}

/// The Go toolchain: `go` on `PATH`, else the official tarball's place.
pub fn find_go(what: &str) -> Result<PathBuf, GoError> {
    command::locate("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| p.is_file()))
        .ok_or_else(|| GoError::Missing {
            what: what.to_string(),
        })
}

/// A `go` command in `dir`, with the default caches and static, reproducible output.
pub fn go_command(go: &Path, dir: &Path) -> Command {
    let mut command = Command::new(go);
    command
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOWORK", "off")
        .env("GOFLAGS", "-buildvcs=false");
    command
}

/// Builds `program` once per machine into `cache_dir/go/<name>-<digest>/bin` and returns that
/// directory. Safe from several processes at once: the first builds, the others wait. `step`
/// prefixes the progress lines (e.g. `[3/17]`).
pub fn build(cache_dir: &Path, program: &GoProgram, step: &str) -> Result<PathBuf, GoError> {
    let bin = program.bin_dir(cache_dir);
    if program.built(cache_dir) {
        return Ok(bin);
    }
    let home = bin.parent().unwrap_or(cache_dir).to_path_buf();
    std::fs::create_dir_all(&home).map_err(io(&home))?;
    let _lock = FileLock::exclusive(&home.join("build.lock"), SETUP_WAIT)?;
    if program.built(cache_dir) {
        return Ok(bin);
    }
    let go = find_go(program.title)?;
    let src = home.join("src");
    for (path, text) in program.files {
        let file = src.join(path);
        file.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&file, text))
            .map_err(io(&file))?;
    }
    std::fs::create_dir_all(&bin).map_err(io(&bin))?;
    eprintln!(
        "dynamo-conformance: {step} building {} from the Go module proxy ...",
        program.title
    );
    let started = Instant::now();
    command::run(
        go_command(&go, &src)
            .args(["build", "-trimpath"])
            .arg(format!("-ldflags={}", program.ldflags))
            .arg(format!("-o={}/", bin.display()))
            .args(program.packages),
        &format!("build {} (go build in {})", program.title, src.display()),
        Bounds::long(),
    )?;
    if let Some(missing) = program
        .outputs
        .iter()
        .map(|o| bin.join(o))
        .find(|p| !p.is_file())
    {
        return Err(CommandError {
            what: format!("build {}", program.title),
            detail: format!("{} is missing after the build", missing.display()),
        }
        .into());
    }
    let marker = bin.join(".built");
    std::fs::write(&marker, program.key()).map_err(io(&marker))?;
    eprintln!(
        "dynamo-conformance: {step} built {} in {}",
        program.title,
        command::minutes(started.elapsed())
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &[(&str, &str)] = &[("go.mod", "module example.local/x\n")];

    fn program(ldflags: &str) -> GoProgram {
        GoProgram {
            name: "x",
            title: "x v1",
            files: FILES,
            packages: &["example.local/x"],
            outputs: &["x"],
            ldflags: ldflags.into(),
        }
    }

    #[test]
    fn the_key_follows_every_input() {
        let a = program("-s -w");
        assert!(a.key().starts_with("x-"));
        assert_eq!(a.key(), program("-s -w").key());
        assert_ne!(a.key(), program("-s").key());
        let dir = Path::new("/c");
        assert_eq!(
            a.output(dir, "x"),
            Path::new("/c/go").join(a.key()).join("bin/x")
        );
    }
}
