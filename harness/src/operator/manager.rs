//! The operator stand-in as the operator pod's `manager` container runs it (kind provider): in-cluster, health and metrics served.
//!
//! The platform chart starts `/manager` with the real operator's flags; the operator image makes
//! `/manager` this program, which sees its name and serves [`run`]: the controllers of
//! [`super::run`] against the cluster it runs in, `/healthz` and `/readyz` on the health probe
//! address (the chart's probes), and `/metrics` (reconcile counts) on the metrics address, which
//! the pod's kube-rbac-proxy fronts on 8443. Leader election is not implemented: the chart runs
//! one replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;

/// The real operator's flags, as the platform chart passes them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "manager",
    about = "The Dynamo operator stand-in of dynamo-conformance"
)]
pub struct ManagerArgs {
    /// Where `/healthz` and `/readyz` are served, e.g. `:8081`.
    #[arg(long = "health-probe-bind-address", default_value = ":8081")]
    pub health: String,
    /// Where `/metrics` is served, e.g. `127.0.0.1:8080`.
    #[arg(long = "metrics-bind-address", default_value = "127.0.0.1:8080")]
    pub metrics: String,
    /// Accepted; one replica runs, so no lease is taken.
    #[arg(long = "leader-elect")]
    pub leader_elect: bool,
    /// Accepted with `--leader-elect`.
    #[arg(long = "leader-election-id")]
    pub leader_election_id: Option<String>,
    /// The platform's etcd (the stand-in finds it by its Service, as on the local provider).
    #[arg(long = "etcdAddr")]
    pub etcd: Option<String>,
    /// The platform's NATS (likewise).
    #[arg(long = "natsAddr")]
    pub nats: Option<String>,
}

/// Errors starting the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// An address flag is not `host:port` or `:port`.
    #[error("invalid address {0:?} (expected host:port or :port)")]
    Address(String),
    /// The in-cluster configuration is missing or unusable.
    #[error("cannot reach the cluster from the operator pod: {0}")]
    Cluster(String),
    /// A port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Set (to anything) in the manager's environment, it checks its flags and ends: the local
/// provider starts the operator pod's `/manager` this way, its controllers running in the agent.
pub const FLAGS_ONLY_ENV: &str = "DYNAMO_CONFORMANCE_MANAGER_FLAGS_ONLY";

/// The first argument `flags` does not define, as Go's `flag.Parse` finds it (parsing stops at
/// `--` or the first argument that is not a flag), e.g. `config` for a 1.x chart's `--config=…`
/// given to the 0.4.1 operator: it then prints `flag provided but not defined: -config` and exits 2.
pub fn undefined_flag(flags: &crate::profile::OperatorFlags, args: &[String]) -> Option<String> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" || !word.starts_with('-') || word == "-" {
            return None;
        }
        let bare = word.trim_start_matches('-');
        let (name, inline) = match bare.split_once('=') {
            Some((n, _)) => (n, true),
            None => (bare, false),
        };
        if name == "h" || name == "help" {
            return None;
        }
        if flags.values.contains(&name) {
            if !inline {
                words.next();
            }
        } else if !flags.switches.contains(&name) {
            return Some(name.to_string());
        }
    }
    None
}

/// `:8081` → `0.0.0.0:8081`; `127.0.0.1:8080` as is.
pub fn bind_address(flag: &str) -> Result<SocketAddr, ManagerError> {
    let full = if flag.starts_with(':') {
        format!("0.0.0.0{flag}")
    } else {
        flag.to_string()
    };
    full.parse()
        .map_err(|_| ManagerError::Address(flag.to_string()))
}

/// Whether this program was started as the operator image's `/manager`.
pub fn invoked_as_manager() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "manager"))
        .unwrap_or(false)
}

/// Serves the controllers, health and metrics until the process is stopped.
pub async fn run(args: ManagerArgs) -> Result<(), ManagerError> {
    let health = bind_address(&args.health)?;
    let metrics = bind_address(&args.metrics)?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| ManagerError::Cluster(e.to_string()))?;
    eprintln!(
        "manager: the dynamo-conformance stand-in for the Dynamo operator (etcdAddr {:?}, natsAddr {:?}: found by their Services); health on {health}, metrics on {metrics}",
        args.etcd, args.nats
    );
    let started = Arc::new(AtomicU64::new(0));
    let health_app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(|| async { "ok" }));
    let counter = started.clone();
    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                format!(
                    "# HELP dynamo_conformance_operator_up The stand-in operator is serving.\n# TYPE dynamo_conformance_operator_up gauge\ndynamo_conformance_operator_up 1\n# HELP dynamo_conformance_operator_metrics_scrapes_total Scrapes of this endpoint.\n# TYPE dynamo_conformance_operator_metrics_scrapes_total counter\ndynamo_conformance_operator_metrics_scrapes_total {}\n",
                    counter.fetch_add(1, Ordering::Relaxed) + 1
                )
            }
        }),
    );
    let listen = |address: SocketAddr| async move {
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ManagerError::Listen { address, source })
    };
    let (health_listener, metrics_listener) = (listen(health).await?, listen(metrics).await?);
    tokio::spawn(async move { axum::serve(health_listener, health_app).await });
    tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });
    super::run(client).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_flags_parse() {
        let args = ManagerArgs::try_parse_from([
            "manager",
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=127.0.0.1:8080",
            "--leader-elect",
            "--leader-election-id=dynamo.nvidia.com",
            "--etcdAddr=dynamo-platform-etcd:2379",
            "--natsAddr=nats://dynamo-platform-nats:4222",
        ])
        .unwrap();
        assert_eq!(
            bind_address(&args.health).unwrap(),
            "0.0.0.0:8081".parse().unwrap()
        );
        assert_eq!(
            bind_address(&args.metrics).unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(args.leader_elect);
        assert!(bind_address("nonsense").is_err());
    }

    #[test]
    fn a_flag_the_releases_operator_does_not_define_is_found_as_go_finds_it() {
        let flags = crate::release::DynamoVersion::guide()
            .profile()
            .operator_flags
            .unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let chart_0_4 = args(&[
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address",
            "127.0.0.1:8080",
            "--leader-elect",
            "-natsAddr=nats://x:4222",
        ]);
        assert_eq!(undefined_flag(&flags, &chart_0_4), None);
        // A 1.x chart's flags given to the 0.4.1 operator.
        let chart_1_x = args(&[
            "--config=/etc/dynamo-operator/config.yaml",
            "--operator-version=1.6.1",
        ]);
        assert_eq!(
            undefined_flag(&flags, &chart_1_x).as_deref(),
            Some("config")
        );
        // A value that looks like a flag is the value; parsing stops at the first non-flag.
        assert_eq!(
            undefined_flag(&flags, &args(&["--etcdAddr", "--x", "stray", "--y"])),
            None
        );
    }
}
