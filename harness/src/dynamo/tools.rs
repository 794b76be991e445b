//! Finds the system programs Dynamo 0.4.1 needs (etcd, NATS), installing Debian's packages when missing.

use std::path::{Path, PathBuf};

use super::DynamoError;

/// A program from a Debian package.
pub type SystemTool = crate::debian::Package;

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

/// The path of each tool, installing the missing ones with apt-get when running as root.
pub fn ensure(tools: &[SystemTool], cache_dir: &Path) -> Result<Vec<PathBuf>, DynamoError> {
    crate::debian::ensure(tools, cache_dir, "Dynamo 0.4.x").map_err(|e| match e {
        crate::debian::DebianError::Missing { packages, .. } => DynamoError::Missing {
            what: format!("{packages} (needed by Dynamo 0.4.x)"),
            hint: format!("run: sudo apt-get install -y {packages}"),
        },
        other => DynamoError::Command {
            what: "install etcd and NATS from Debian".into(),
            detail: other.to_string(),
        },
    })
}
