//! Watch-driven waits that are always bounded and, on timeout, say what they last saw.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::K8sError;

/// What to wait for: an object, the condition it must reach, and how to describe it meanwhile.
pub struct Wait<'a, K> {
    /// The API of the object's kind (and namespace).
    pub api: Api<K>,
    /// The object's name.
    pub name: &'a str,
    /// Its namespace, for looking up its events.
    pub namespace: Option<&'a str>,
    /// The condition, as a verdict reads it ("available", "established").
    pub condition: &'a str,
    /// The longest wait.
    pub timeout: Duration,
}

/// Waits until `cond` holds for the object; on timeout, the error carries `describe` of the
/// object as last seen and the latest warning event about it.
pub async fn until<K>(
    client: &Client,
    wait: Wait<'_, K>,
    cond: impl Condition<K>,
    describe: impl Fn(Option<&K>) -> String,
) -> Result<K, K8sError>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let what = match wait.namespace {
        Some(ns) => format!("{kind} {ns}/{}", wait.name),
        None => format!("{kind} {}", wait.name),
    };
    match tokio::time::timeout(
        wait.timeout,
        await_condition(wait.api.clone(), wait.name, cond),
    )
    .await
    {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => Err(K8sError::Timeout {
            what,
            condition: wait.condition.into(),
            waited: wait.timeout,
            last_seen: "the object was deleted".into(),
        }),
        Ok(Err(e)) => Err(K8sError::Timeout {
            what,
            condition: wait.condition.into(),
            waited: wait.timeout,
            last_seen: format!("the watch failed: {e}"),
        }),
        Err(_) => {
            let seen = wait.api.get_opt(wait.name).await.ok().flatten();
            let mut last_seen = match &seen {
                None => "the object does not exist".to_string(),
                Some(object) => describe(Some(object)),
            };
            if let Some(event) = latest_warning(client, wait.namespace, wait.name).await {
                last_seen.push_str(&format!("; latest warning: {event}"));
            }
            Err(K8sError::Timeout {
                what,
                condition: wait.condition.into(),
                waited: wait.timeout,
                last_seen,
            })
        }
    }
}

/// The latest warning event about the object named `name`, as `Reason: message`.
pub async fn latest_warning(
    client: &Client,
    namespace: Option<&str>,
    name: &str,
) -> Option<String> {
    let api: Api<Event> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let params = ListParams::default().fields(&format!("involvedObject.name={name},type=Warning"));
    let events = api.list(&params).await.ok()?;
    events
        .items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp
                .clone()
                .map(|t| t.0)
                .or(e.event_time.clone().map(|t| t.0))
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
}
