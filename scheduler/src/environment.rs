//! What must exist before a policy's backups are worth creating: its BackupStorageLocation, known
//! and Available (Velero fails a backup's validation otherwise), and something in its scope.

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt as _};

use crate::policy::ValidPolicy;
use crate::velero;

/// Why a policy is not ready: its condition reason and message.
pub type NotReady = (&'static str, String);

/// Storage location, namespaces and selection must exist before backups are worth creating.
pub async fn check(
    client: &Client,
    namespace: &str,
    valid: &ValidPolicy,
) -> Result<Result<(), NotReady>, kube::Error> {
    let locations: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &velero::storage_location_resource(),
    );
    let all = locations.list(&ListParams::default()).await?.items;
    let names: Vec<String> = all.iter().map(kube::ResourceExt::name_any).collect();
    let used = match &valid.template.storage_location {
        Some(location) => all.iter().find(|l| l.name_any() == *location),
        None => all.iter().find(|l| velero::StorageLocation::is_default(l)),
    };
    let Some(used) = used else {
        let message = match &valid.template.storage_location {
            Some(location) => format!(
                "spec.template.storageLocation {location:?} is not a BackupStorageLocation in namespace {} (found: {})",
                namespace,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
            None => format!(
                "spec.template.storageLocation is empty and namespace {} has no default BackupStorageLocation (found: {})",
                namespace,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        };
        return Ok(Err(("UnknownStorageLocation", message)));
    };
    // Velero fails a backup as FailedValidation unless its location is Available.
    let phase = used
        .data
        .pointer("/status/phase")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if phase != "Available" {
        return Ok(Err((
            "StorageLocationUnavailable",
            format!(
                "BackupStorageLocation {} is {}: Velero would fail the backup's validation; waiting for it to become Available",
                used.name_any(),
                if phase.is_empty() {
                    "not validated yet"
                } else {
                    phase
                }
            ),
        )));
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut missing = Vec::new();
    for namespace in &valid.template.included_namespaces {
        if namespace != "*" && namespaces.get_opt(namespace).await?.is_none() {
            missing.push(namespace.as_str());
        }
    }
    if !missing.is_empty() && missing.len() == valid.template.included_namespaces.len() {
        return Ok(Err((
            "NothingSelected",
            format!(
                "spec.template.includedNamespaces selects nothing: namespace(s) {} do not exist",
                missing.join(", ")
            ),
        )));
    }
    if !valid.label_query.is_empty() && !selects_something(client, valid).await? {
        return Ok(Err((
            "NothingSelected",
            format!(
                "spec.template.labelSelector {:?} matches no PersistentVolumeClaim or VirtualMachine in {}",
                valid.label_query,
                if valid.template.included_namespaces.is_empty() {
                    "any namespace".to_owned()
                } else {
                    valid.template.included_namespaces.join(", ")
                }
            ),
        )));
    }
    Ok(Ok(()))
}

async fn selects_something(client: &Client, valid: &ValidPolicy) -> Result<bool, kube::Error> {
    let params = ListParams::default().labels(&valid.label_query).limit(1);
    let vm = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ));
    let scopes: Vec<Option<&str>> = if valid.template.included_namespaces.is_empty() {
        vec![None]
    } else {
        valid
            .template
            .included_namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    for scope in scopes {
        let (pvcs, vms): (Api<PersistentVolumeClaim>, Api<DynamicObject>) = match scope {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced_with(client.clone(), ns, &vm),
            ),
            None => (Api::all(client.clone()), Api::all_with(client.clone(), &vm)),
        };
        if !pvcs.list_metadata(&params).await?.items.is_empty() {
            return Ok(true);
        }
        match vms.list_metadata(&params).await {
            Ok(list) if !list.items.is_empty() => return Ok(true),
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}
