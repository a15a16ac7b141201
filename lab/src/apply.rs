//! Server-side apply of multi-document YAML through API discovery, as `kubectl apply --server-side`
//! does, waiting for applied `CustomResourceDefinition`s to be Established so that later documents
//! (and the caller) can use their kinds at once.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::gvk::GroupVersion;
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

/// The field manager of everything this module applies.
pub const FIELD_MANAGER: &str = "replicadr-e2e";

/// How long a new CRD may take to become Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long discovery may lag behind a CRD that was just Established.
const DISCOVERY_GRACE: Duration = Duration::from_secs(10);
const DISCOVERY_RETRY: Duration = Duration::from_millis(200);

/// Why a manifest could not be applied. Documents are numbered from 1 in order of appearance.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("document {number} is not valid YAML")]
    Yaml {
        number: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("document {number} is not a Kubernetes object")]
    NotAnObject {
        number: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {number} has no {field}")]
    MissingField { number: usize, field: &'static str },
    #[error("document {number} has an invalid apiVersion {api_version:?}")]
    InvalidApiVersion { number: usize, api_version: String },
    #[error("document {number}: the server serves no {kind} in {api_version}")]
    UnknownKind {
        number: usize,
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply document {number} ({kind} {name})")]
    Apply {
        number: usize,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("CustomResourceDefinition {name} is not Established after {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
    #[error("cannot watch CustomResourceDefinition {name}")]
    WatchCrd {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
}

/// One object of a manifest, with what is needed to route it.
#[derive(Debug, Clone)]
pub struct Document {
    /// Position in the manifest, from 1 (items of a `List` share their list's number).
    pub number: usize,
    pub gvk: GroupVersionKind,
    pub object: DynamicObject,
}

impl Document {
    fn new(number: usize, value: Value) -> Result<Self, ApplyError> {
        let field = |pointer: &str, field| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or(ApplyError::MissingField { number, field })
        };
        let api_version = field("/apiVersion", "apiVersion")?;
        let kind = field("/kind", "kind")?;
        field("/metadata/name", "metadata.name")?;
        let gvk = api_version
            .parse::<GroupVersion>()
            .map_err(|_| ApplyError::InvalidApiVersion {
                number,
                api_version: api_version.clone(),
            })?
            .with_kind(&kind);
        let object = serde_json::from_value(value)
            .map_err(|source| ApplyError::NotAnObject { number, source })?;
        Ok(Self {
            number,
            gvk,
            object,
        })
    }

    /// The object's name (checked to be present when parsed).
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    fn is_crd(&self) -> bool {
        self.gvk.group == "apiextensions.k8s.io" && self.gvk.kind == "CustomResourceDefinition"
    }

    /// For a CRD, the API group it defines.
    fn defined_group(&self) -> Option<&str> {
        self.object.data.pointer("/spec/group")?.as_str()
    }
}

/// Splits a multi-document manifest into objects, skipping empty documents and flattening `*List`s.
pub fn parse_documents(yaml: &str) -> Result<Vec<Document>, ApplyError> {
    let mut documents = Vec::new();
    for (index, deserializer) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let number = index + 1;
        let value = Value::deserialize(deserializer)
            .map_err(|source| ApplyError::Yaml { number, source })?;
        push_objects(number, value, &mut documents)?;
    }
    Ok(documents)
}

fn push_objects(number: usize, value: Value, out: &mut Vec<Document>) -> Result<(), ApplyError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(mut map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            let Some(Value::Array(items)) = map.remove("items") else {
                unreachable!("checked by the guard")
            };
            items
                .into_iter()
                .try_for_each(|item| push_objects(number, item, out))
        }
        value => {
            out.push(Document::new(number, value)?);
            Ok(())
        }
    }
}

/// Applies every object of `yaml` in order with server-side apply (forcing conflicts), then waits
/// for the CRDs among them to be Established. Namespaced objects without a namespace go to
/// `default`. Returns the objects as the server stored them.
pub async fn apply_yaml(client: &Client, yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    apply_documents(client, yaml, &PatchParams::apply(FIELD_MANAGER).force()).await
}

/// Server-side applies every object of `yaml` as a dry run with strict field validation, as
/// `kubectl apply --server-side --dry-run=server --validate=strict` does: the API server runs its
/// schema validation, defaulting and admission on each object, rejects unknown or duplicate
/// fields, and stores nothing. Kinds defined by CRDs must already be served; CRDs in `yaml` are
/// themselves only validated. Returns the objects as the server would have stored them.
pub async fn dry_run_yaml(client: &Client, yaml: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .dry_run()
        .validation_strict();
    apply_documents(client, yaml, &params).await
}

async fn apply_documents(
    client: &Client,
    yaml: &str,
    params: &PatchParams,
) -> Result<Vec<DynamicObject>, ApplyError> {
    let documents = parse_documents(yaml)?;
    let mut pending_crds = Vec::new();
    let mut defined_groups = BTreeSet::new();
    let mut applied = Vec::with_capacity(documents.len());
    for document in &documents {
        // A CRD's objects may follow it in the same manifest.
        if !document.is_crd() {
            wait_established(client, &mut pending_crds).await?;
        }
        let recently_defined = defined_groups.contains(document.gvk.group.as_str());
        let (resource, capabilities) = resolve(client, document, recently_defined).await?;
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                document
                    .object
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or("default"),
                &resource,
            ),
        };
        let stored = api
            .patch(document.name(), params, &Patch::Apply(&document.object))
            .await
            .map_err(|source| ApplyError::Apply {
                number: document.number,
                kind: document.gvk.kind.clone(),
                name: document.name().to_owned(),
                source,
            })?;
        tracing::debug!(kind = %document.gvk.kind, name = document.name(), "applied");
        // A dry-run CRD is never stored, so there is nothing to wait for.
        if document.is_crd() && !params.dry_run {
            pending_crds.push(document.name().to_owned());
            defined_groups.extend(document.defined_group().map(str::to_owned));
        }
        applied.push(stored);
    }
    wait_established(client, &mut pending_crds).await?;
    Ok(applied)
}

/// Finds the resource serving `document`'s kind, retrying briefly for groups whose CRD was just
/// Established (discovery can trail the condition).
async fn resolve(
    client: &Client,
    document: &Document,
    recently_defined: bool,
) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
    let deadline = Instant::now()
        + if recently_defined {
            DISCOVERY_GRACE
        } else {
            Duration::ZERO
        };
    loop {
        match discovery::pinned_kind(client, &document.gvk).await {
            Ok(found) => return Ok(found),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(DISCOVERY_RETRY).await,
            Err(source) => {
                return Err(ApplyError::UnknownKind {
                    number: document.number,
                    api_version: document.gvk.api_version(),
                    kind: document.gvk.kind.clone(),
                    source,
                });
            }
        }
    }
}

/// Waits for each named CRD to be Established, emptying `names`.
async fn wait_established(client: &Client, names: &mut Vec<String>) -> Result<(), ApplyError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let waits = names.drain(..).map(|name| {
        let api = api.clone();
        async move {
            let established = await_condition(api, &name, conditions::is_crd_established());
            match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(ApplyError::WatchCrd { name, source }),
                Err(_) => Err(ApplyError::NotEstablished {
                    name,
                    timeout: ESTABLISH_TIMEOUT,
                }),
            }
        }
    });
    futures::future::try_join_all(waits).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_empty_documents_and_flattens_lists() {
        let yaml = "---\n\
            apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n\
            ---\n---\n\
            apiVersion: v1\nkind: List\nitems:\n\
            - {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: a}, data: {k: v}}\n\
            - {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n";
        let documents = parse_documents(yaml).expect("parse");
        let summary: Vec<_> = documents
            .iter()
            .map(|d| {
                (
                    d.number,
                    d.gvk.group.as_str(),
                    d.gvk.kind.as_str(),
                    d.name(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "", "Namespace", "a"),
                (3, "", "ConfigMap", "b"),
                (3, "apps", "Deployment", "c"),
            ]
        );
        assert_eq!(documents[1].object.data["data"]["k"], "v");
        assert_eq!(documents[1].object.metadata.namespace.as_deref(), Some("a"));
    }

    #[test]
    fn names_the_document_that_lacks_a_name() {
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\n";
        let error = parse_documents(yaml).expect_err("no name");
        assert_eq!(error.to_string(), "document 2 has no metadata.name");
    }

    #[test]
    fn reports_invalid_yaml_by_document() {
        let error = parse_documents(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n[unclosed\n",
        )
        .expect_err("invalid");
        assert!(
            matches!(error, ApplyError::Yaml { number: 2, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn recognises_crds_and_their_group() {
        let yaml = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
            metadata: {name: widgets.example.com}\nspec: {group: example.com}\n";
        let documents = parse_documents(yaml).expect("parse");
        assert!(documents[0].is_crd());
        assert_eq!(documents[0].defined_group(), Some("example.com"));
    }
}
