//! Server-side apply of multi-document YAML fixtures, labelled as the suite's own.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use serde_json::Value;

use super::{FIELD_MANAGER, K8sError, MANAGED_BY_LABEL, STAGE_LABEL};

/// An object that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its kind.
    pub kind: String,
    /// Its namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// Parses a multi-document YAML fixture into JSON objects, skipping empty documents.
pub fn parse_documents(fixture: &str, yaml: &str) -> Result<Vec<Value>, K8sError> {
    let invalid = |reason: String| K8sError::InvalidFixture {
        fixture: fixture.to_string(),
        reason,
    };
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| invalid(e.to_string()))?;
    let mut objects = Vec::new();
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        for key in ["apiVersion", "kind"] {
            if document.get(key).and_then(Value::as_str).is_none() {
                return Err(invalid(format!("a document has no {key}")));
            }
        }
        if document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(invalid("a document has no metadata.name".into()));
        }
        objects.push(document);
    }
    Ok(objects)
}

/// Applies every object of `yaml` with server-side apply, labelled with the stage that owns it.
/// Namespaced objects without a namespace go to `namespace`. Discovery is run anew each
/// call, so kinds of CRDs established a moment ago are found.
pub async fn apply_yaml(
    client: &Client,
    fixture: &str,
    yaml: &str,
    namespace: &str,
    stage: &str,
) -> Result<Vec<Applied>, K8sError> {
    apply_objects(
        client,
        fixture,
        parse_documents(fixture, yaml)?,
        namespace,
        stage,
    )
    .await
}

/// Applies parsed objects, as [`apply_yaml`] does.
pub async fn apply_objects(
    client: &Client,
    fixture: &str,
    objects: Vec<Value>,
    namespace: &str,
    stage: &str,
) -> Result<Vec<Applied>, K8sError> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| K8sError::api("discover the cluster's APIs", e))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::new();
    for mut object in objects {
        let labels = object
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
            .expect("checked: metadata.name exists")
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(MANAGED_BY_LABEL.0.into(), MANAGED_BY_LABEL.1.into());
            labels.insert(STAGE_LABEL.into(), stage.into());
        }
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some((resource, capabilities)) = super::resolve(&discovery, &api_version, &kind) else {
            return Err(K8sError::UnknownKind {
                fixture: fixture.to_string(),
                kind,
                api_version,
            });
        };
        let (api, ns): (Api<DynamicObject>, Option<String>) = match capabilities.scope {
            Scope::Cluster => (Api::all_with(client.clone(), &resource), None),
            Scope::Namespaced => {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(namespace)
                    .to_string();
                object["metadata"]["namespace"] = Value::String(ns.clone());
                (
                    Api::namespaced_with(client.clone(), &ns, &resource),
                    Some(ns),
                )
            }
        };
        // Said before anything is read or written, so that a cleanup beside this run leaves it.
        crate::ledger::record_apply(true, stage, &api_version, &kind, ns.as_deref(), &name);
        // The run that created an object stays on its label; a new object is this run's.
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| K8sError::api(format!("read {kind} {name}"), e))?;
        let creator = crate::ledger::creator(existing.as_ref().map(|o| &o.metadata));
        if let (Some(creator), Some(labels)) =
            (creator, object["metadata"]["labels"].as_object_mut())
        {
            labels.insert(crate::ledger::RUN_LABEL.into(), creator.into());
        }
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|e| K8sError::api(format!("apply {kind} {name} from {fixture}"), e))?;
        if existing.is_none() {
            crate::ledger::record_apply(false, stage, &api_version, &kind, ns.as_deref(), &name);
        }
        applied.push(Applied {
            kind,
            namespace: ns,
            name,
        });
    }
    Ok(applied)
}

/// The labels the suite puts on what it creates, for label selectors.
pub fn selector(stage: &str) -> String {
    let labels: BTreeMap<&str, &str> = [MANAGED_BY_LABEL, (STAGE_LABEL, stage)]
        .into_iter()
        .collect();
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_and_checked() {
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n";
        let objects = parse_documents("f", yaml).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["kind"], "ConfigMap");
    }

    #[test]
    fn a_document_without_a_name_is_rejected_naming_the_fixture() {
        let err = parse_documents(
            "storage.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid fixture storage.yaml: a document has no metadata.name"
        );
    }

    #[test]
    fn invalid_yaml_is_rejected_naming_the_fixture() {
        let err = parse_documents("x.yaml", "kind: [").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid fixture x.yaml: "),
            "{err}"
        );
    }
}
