//! Reading and writing fields of Kubernetes objects held as JSON, the way every action and check
//! names them in messages.

use serde_json::{Map, Value};

/// Name, namespace and kind of an object, for messages: `PersistentVolume pv-1`.
pub fn describe(object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let meta = object.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// `(namespace, name)` of a PersistentVolume's `spec.claimRef`, when it has one (a part it lacks
/// is empty).
pub fn claim_ref(pv: &Value) -> Option<(String, String)> {
    let reference = pv.pointer("/spec/claimRef")?;
    let field = |key: &str| {
        reference
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some((field("namespace"), field("name")))
}

/// The object at `path` below `root`, created (or replaced, if not an object) as needed.
pub fn object_at<'v>(
    root: &'v mut Map<String, Value>,
    path: &[&str],
) -> &'v mut Map<String, Value> {
    let mut current = root;
    for key in path {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        current = entry.as_object_mut().expect("made an object above");
    }
    current
}

/// A string field of an object by JSON pointer, `None` when absent, not a string or empty.
pub fn string_at<'v>(object: &'v Value, pointer: &str) -> Option<&'v str> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}
