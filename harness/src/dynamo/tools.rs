//! The planes of releases that use etcd and NATS: Debian's etcd and nats-server 2.10 from the Go proxy.

use std::path::{Path, PathBuf};

use super::DynamoError;

/// A program from a Debian package.
pub type SystemTool = crate::debian::Package;

/// etcd, the discovery store of the etcd-and-NATS releases (0.4.1 to 1.0.2).
pub const ETCD: SystemTool = SystemTool {
    program: "etcd",
    package: "etcd-server",
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

/// The etcd and NATS programs of one platform.
#[derive(Debug, Clone)]
pub struct PlanePrograms {
    /// Debian's `etcd` (3.4.23 on bookworm), installed with apt-get when missing.
    pub etcd: PathBuf,
    /// nats-server v2.10.21, the platform chart's NATS release, built from the Go module proxy
    /// ([`crate::images::programs::NATS_SERVER`]). Debian's 2.9.10 does not do: the frontends
    /// of Dynamo 0.8.1 and 0.9.1 fail on its JetStream answers ("JetStream not available: …
    /// data did not match any variant of untagged enum Response", seen here).
    pub nats: PathBuf,
}

/// etcd and NATS, installing etcd with apt-get when running as root and building NATS once per
/// machine (its progress lines on stderr).
pub fn ensure(cache_dir: &Path) -> Result<PlanePrograms, DynamoError> {
    let etcd = crate::debian::ensure(&[ETCD], cache_dir, "Dynamo's etcd and NATS planes")
        .map_err(|e| match e {
            crate::debian::DebianError::Missing { packages, .. } => DynamoError::Missing {
                what: format!("{packages} (the etcd of Dynamo's etcd and NATS planes)"),
                hint: format!("run: sudo apt-get install -y {packages}"),
            },
            other => DynamoError::Command {
                what: "install etcd from Debian".into(),
                detail: other.to_string(),
            },
        })?
        .remove(0);
    let program = &*crate::images::programs::NATS_SERVER;
    let nats = crate::gobuild::build(cache_dir, program, "[planes]")
        .map_err(|e| DynamoError::Command {
            what: format!("build {}", program.title),
            detail: e.to_string(),
        })?
        .join("nats-server");
    Ok(PlanePrograms { etcd, nats })
}
