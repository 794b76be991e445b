//! The existing provider: a cluster named by kubeconfig and context, such as a real vGPU cluster.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{CONNECT_TIMEOUT, ClusterError};
use crate::config::Config as SuiteConfig;

/// The kubeconfig to use: the configured one, else `$KUBECONFIG`'s first file, else `~/.kube/config`.
pub fn kubeconfig_path(config: &SuiteConfig) -> PathBuf {
    if let Some(path) = &config.kubeconfig {
        return path.clone();
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".kube")
        .join("config")
}

/// A client for the cluster `path` names, after the API server has answered `/version`.
pub async fn connect(path: &Path, context: Option<&str>) -> Result<(Client, String), ClusterError> {
    let bad = |reason: String| ClusterError::Kubeconfig {
        path: path.display().to_string(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| bad(first_line(&e.to_string())))?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| bad(first_line(&e.to_string())))?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| bad(first_line(&e.to_string())))?;
    let unreachable = |reason: String| ClusterError::Unreachable {
        server: server.clone(),
        reason,
    };
    let version = tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(first_line(&crate::openai::client::error_chain(&e))))?;
    Ok((client, version.git_version))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}
