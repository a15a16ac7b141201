//! Writes each fuzz target's seed corpus from the project's own fixtures (a healthy Velero backup,
//! its resource list, the site map, NFS PVs) into `corpus/<target>/`, so the fuzzers start from
//! valid input and mutate inward instead of discovering gzip and tar from nothing.

use std::io::Read as _;
use std::path::Path;

use replicadr_lab::fixture;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };
    let (tarball, list) = fixture::healthy_vm_backup()?;
    let gunzip = |bytes: &[u8]| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    };
    // First byte: 0 = the rest is gunzipped content (the target gzips it), 1 = the rest as stored.
    write(
        "backup_tarball",
        "healthy-tar",
        &[&[0u8][..], &gunzip(&tarball)?].concat(),
    )?;
    write(
        "backup_tarball",
        "healthy-tar-gz",
        &[&[1u8][..], &tarball].concat(),
    )?;
    write(
        "resource_list",
        "healthy-json",
        &[&[0u8][..], &gunzip(&list)?].concat(),
    )?;
    write(
        "resource_list",
        "healthy-json-gz",
        &[&[1u8][..], &list].concat(),
    )?;
    write("sitemap_parse", "fixture", fixture::SITE_MAP.as_bytes())?;
    for (name, object) in fixture::healthy_vm_objects() {
        let bytes = serde_json::to_vec(&object)?;
        let file = format!(
            "{}-{}",
            name,
            object["metadata"]["name"].as_str().unwrap_or("item")
        );
        if name == "persistentvolumes" {
            write("restore_item_action", &file, &bytes)?;
            write("backup_item_action", &file, &bytes)?;
        }
    }
    for (server, path) in [
        ("nfs-a.example.com", "/exports/vms/pv-1"),
        ("10.20.0.5", "/replica/vms/pv-1"),
        ("elsewhere", "/x"),
    ] {
        let pv = serde_json::to_vec(&fixture::objects::nfs_pv(
            "pv-extra", server, path, "Delete",
        ))?;
        write("restore_item_action", &format!("nfs-{server}"), &pv)?;
        write("backup_item_action", &format!("nfs-{server}"), &pv)?;
    }
    println!("seeds written to {}", root.display());
    Ok(())
}
