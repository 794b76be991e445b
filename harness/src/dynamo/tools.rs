//! Finds the system programs Dynamo 0.4.1 needs (etcd, NATS), installing Debian's packages when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DynamoError;
use super::install::run;
use super::lock::FileLock;

/// A program from a Debian package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemTool {
    /// The executable's name.
    pub program: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
}

/// etcd, the discovery store of Dynamo 0.4.x.
pub const ETCD: SystemTool = SystemTool {
    program: "etcd",
    package: "etcd-server",
};
/// NATS with JetStream, the request plane of Dynamo 0.4.x.
pub const NATS: SystemTool = SystemTool {
    program: "nats-server",
    package: "nats-server",
};

/// etcd as a one-member cluster named `name` on loopback URLs, its data in `data_dir`.
pub fn etcd_args(name: &str, data_dir: &str, client_url: &str, peer_url: &str) -> Vec<String> {
    [
        "--name",
        name,
        "--data-dir",
        data_dir,
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        &format!("{name}={peer_url}"),
    ]
    .map(String::from)
    .to_vec()
}

/// NATS with JetStream on 127.0.0.1, its monitoring port beside it, its store in `store_dir`.
pub fn nats_args(port: &str, monitor: &str, store_dir: &str) -> Vec<String> {
    [
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        port,
        "-m",
        monitor,
        "-sd",
        store_dir,
    ]
    .map(String::from)
    .to_vec()
}

fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The path of each tool, installing the missing ones with apt-get when running as root.
pub fn ensure(tools: &[SystemTool], cache_dir: &Path) -> Result<Vec<PathBuf>, DynamoError> {
    let missing: Vec<SystemTool> = tools
        .iter()
        .copied()
        .filter(|t| locate(t.program).is_none())
        .collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || locate("apt-get").is_none() {
            return Err(DynamoError::Missing {
                what: format!("{} (needed by Dynamo 0.4.x)", packages.join(", ")),
                hint: format!("run: sudo apt-get install -y {}", packages.join(" ")),
            });
        }
        let _lock = FileLock::exclusive(&cache_dir.join("apt.lock"), super::lock::SETUP_WAIT)?;
        if tools.iter().any(|t| locate(t.program).is_none()) {
            eprintln!(
                "dynamo-conformance: installing {} from Debian (first run on this machine only)",
                packages.join(", ")
            );
            let install = || {
                run(
                    Command::new("apt-get")
                        .args(["install", "-y", "-q", "--no-install-recommends"])
                        .args(&packages)
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    "apt-get install",
                )
            };
            if install().is_err() {
                run(
                    Command::new("apt-get").args(["update", "-q"]),
                    "apt-get update",
                )?;
                install()?;
            }
        }
    }
    tools
        .iter()
        .map(|t| {
            locate(t.program).ok_or_else(|| DynamoError::Missing {
                what: t.program.to_string(),
                hint: format!("install the Debian package {}", t.package),
            })
        })
        .collect()
}
