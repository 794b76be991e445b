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
    let named_proxy = proxy_named(&kubeconfig, context);
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| bad(first_line(&e.to_string())))?;
    if !named_proxy {
        // kubectl's rule: a proxy from the environment unless NO_PROXY names the API server (kube
        // reads HTTPS_PROXY alone and matches NO_PROXY against the proxy, not the server).
        config.proxy_url = hyper_util::client::proxy::matcher::Matcher::from_env()
            .intercept(&config.cluster_url)
            .map(|intercept| intercept.uri().clone());
    }
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

/// Whether the kubeconfig's cluster for `context` (else its current context) names a `proxy-url`.
fn proxy_named(kubeconfig: &Kubeconfig, context: Option<&str>) -> bool {
    let context = context.or(kubeconfig.current_context.as_deref());
    let cluster = kubeconfig
        .contexts
        .iter()
        .find(|c| Some(c.name.as_str()) == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    kubeconfig
        .clusters
        .iter()
        .filter(|c| Some(&c.name) == cluster.as_ref())
        .filter_map(|c| c.cluster.as_ref())
        .any(|c| c.proxy_url.as_deref().is_some_and(|p| !p.is_empty()))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CLUSTERS: &str = "apiVersion: v1
kind: Config
current-context: direct
clusters:
- name: direct
  cluster: {server: https://10.0.0.1:6443}
- name: proxied
  cluster: {server: https://10.0.0.2:6443, proxy-url: http://proxy.corp:3128}
contexts:
- name: direct
  context: {cluster: direct, user: u}
- name: proxied
  context: {cluster: proxied, user: u}
users:
- name: u
  user: {token: t}
";

    #[test]
    fn a_proxy_url_is_named_per_context_and_the_current_one_by_default() {
        let kubeconfig = Kubeconfig::from_yaml(TWO_CLUSTERS).unwrap();
        assert!(!proxy_named(&kubeconfig, None));
        assert!(!proxy_named(&kubeconfig, Some("direct")));
        assert!(proxy_named(&kubeconfig, Some("proxied")));
        assert!(!proxy_named(&kubeconfig, Some("no-such-context")));
    }
}
