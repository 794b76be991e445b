//! Port-forwards to pods opened through the API server by the harness itself (kube-rs, no kubectl).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::K8sError;

/// A local port that forwards each connection to a pod's port, like `kubectl port-forward`.
/// Stops when dropped.
#[derive(Debug)]
pub struct PortForward {
    /// The local address to connect to.
    pub local: SocketAddr,
    /// `namespace/pod`.
    pub pod: String,
    /// The pod's port.
    pub port: u16,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl PortForward {
    /// Listens on a free loopback port and forwards every connection to `port` of `pod`.
    /// Must be called within the runtime the forward should live in.
    pub async fn open(
        pods: Api<Pod>,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<PortForward, K8sError> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| K8sError::Forward {
                    pod: format!("{namespace}/{pod}"),
                    port,
                    reason: format!("cannot listen on loopback: {e}"),
                })?;
        let local = listener.local_addr().map_err(|e| K8sError::Forward {
            pod: format!("{namespace}/{pod}"),
            port,
            reason: e.to_string(),
        })?;
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let name = pod.to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let pods = pods.clone();
                let name = name.clone();
                let errors = errors.clone();
                tokio::spawn(async move {
                    let result = async {
                        let mut forwarder = pods
                            .portforward(&name, &[port])
                            .await
                            .map_err(|e| e.to_string())?;
                        let mut upstream = forwarder
                            .take_stream(port)
                            .ok_or_else(|| "the API server opened no stream".to_string())?;
                        let server_error = forwarder.take_error(port);
                        let copied = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                        drop(upstream);
                        // The API server reports a refused dial (say, no process behind the pod) here.
                        if let Some(error) = server_error
                            && let Ok(Some(message)) =
                                tokio::time::timeout(Duration::from_secs(2), error).await
                        {
                            return Err(message);
                        }
                        let _ = forwarder.join().await;
                        copied.map(drop).map_err(|e| e.to_string())
                    }
                    .await;
                    if let Err(e) = result {
                        *errors.lock().expect("error lock") = Some(e);
                    }
                });
            }
        });
        let forward = PortForward {
            local,
            pod: format!("{namespace}/{pod}"),
            port,
            last_error,
            task,
        };
        forward.record(crate::ledger::Action::Created);
        Ok(forward)
    }

    /// The base URL of the forwarded port.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }

    /// The last error a forwarded connection met, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }

    /// One line for messages: which pod and port, through which local address.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "pod {} port {} (port-forward {})",
            self.pod, self.port, self.local
        );
        if let Some(e) = self.last_error() {
            text.push_str(&format!("; port-forward error: {e}"));
        }
        text
    }
}

impl PortForward {
    /// Records the forward in the run's ledger: `pod:port via 127.0.0.1:local` of this process.
    fn record(&self, action: crate::ledger::Action) {
        let (namespace, pod) = self.pod.split_once('/').unwrap_or(("", &self.pod));
        crate::ledger::record(crate::ledger::Entry::now(
            action,
            "forward",
            crate::ledger::HOST,
            crate::ledger::PORT_FORWARD,
            Some(namespace),
            &format!(
                "{pod}:{} via {} (pid {})",
                self.port,
                self.local,
                std::process::id()
            ),
        ));
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
        self.record(crate::ledger::Action::Ended);
    }
}
