//! The Hugging Face token secret, from `HF_TOKEN` or a file; the value is never printed.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use super::{Stage, StageError};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::k8s::{FIELD_MANAGER, K8sError, MANAGED_BY_LABEL, STAGE_LABEL};

/// The guide's secret name.
pub const SECRET: &str = "hf-token-secret";
/// The guide's key.
pub const KEY: &str = "token";
/// The value used where no token is given and nothing downloads a model (the local provider,
/// kind's simulated path: the mocker serves a tokenizer baked in).
pub const LOCAL_PLACEHOLDER: &str = "local-provider-needs-no-token";

/// The token, from the configured file or `HF_TOKEN`; a placeholder when `offline` and none is given.
pub fn token(config: &Config, offline: bool) -> Result<(String, &'static str), StageError> {
    let input = |reason: String| StageError::Input {
        stage: "secret",
        reason,
    };
    if let Some(path) = &config.hf_token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(input(format!("the token file {} is empty", path.display())));
        }
        return Ok((token, "the token file"));
    }
    match std::env::var("HF_TOKEN") {
        Ok(token) if !token.trim().is_empty() => Ok((token.trim().to_string(), "HF_TOKEN")),
        _ if offline => Ok((
            LOCAL_PLACEHOLDER.to_string(),
            "a placeholder (no HF_TOKEN; nothing here downloads a model)",
        )),
        _ => Err(input(
            "no Hugging Face token: set HF_TOKEN or --hf-token-file".into(),
        )),
    }
}

fn labels() -> BTreeMap<String, String> {
    [
        (MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1),
        (STAGE_LABEL, "secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Creates the namespace if absent (never relabelling one the suite did not create), then applies the secret.
pub async fn ensure(cluster: &Cluster, config: &Config) -> Result<Vec<String>, StageError> {
    let fail = StageError::cluster(Stage::Secret);
    let (token, source) = token(config, cluster.offline())?;
    ensure_namespace(cluster, &config.namespace)
        .await
        .map_err(&fail)?;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &config.namespace);
    let existing = secrets
        .get_metadata_opt(SECRET)
        .await
        .map_err(|e| fail(K8sError::api(format!("read secret {SECRET}"), e)))?;
    let mut labels = labels();
    if let Some(creator) = crate::ledger::creator(existing.as_ref().map(|m| &m.metadata)) {
        labels.insert(crate::ledger::RUN_LABEL.into(), creator);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(KEY.to_string(), ByteString(token.into_bytes()))]
                .into_iter()
                .collect(),
        ),
        ..Secret::default()
    };
    secrets
        .patch(
            SECRET,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| fail(K8sError::api(format!("apply secret {SECRET}"), e)))?;
    crate::ledger::record_apply(
        existing.is_some(),
        "secret",
        "v1",
        "Secret",
        Some(&config.namespace),
        SECRET,
    );
    Ok(vec![format!("token from {source} (value never printed)")])
}

/// Creates `name` unless it exists.
pub async fn ensure_namespace(cluster: &Cluster, name: &str) -> Result<(), K8sError> {
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    if namespaces
        .get_opt(name)
        .await
        .map_err(|e| K8sError::api(format!("read namespace {name}"), e))?
        .is_some()
    {
        return Ok(());
    }
    let mut labels = labels();
    if let Some(creator) = crate::ledger::creator(None) {
        labels.insert(crate::ledger::RUN_LABEL.into(), creator);
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {
            crate::ledger::record_apply(false, "secret", "v1", "Namespace", None, name);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(K8sError::api(format!("create namespace {name}"), e)),
    }
}
