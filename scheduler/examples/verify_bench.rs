//! The verification benchmark's two halves (driven by `hack/bench/verify-bench.sh`):
//! `generate <items> <out.tar.gz>` writes a synthetic Velero backup of `items` items (VMs with
//! their PVCs and NFS PVs, the rest ConfigMaps), and `verify <tarball> <resource-list>` runs the
//! verifier's streaming pass over it and prints throughput and peak memory as JSON.

use std::fs::File;
use std::io::BufWriter;
use std::time::Instant;

use anyhow::{Context as _, bail};
use replicadr_core::sitemap::SiteMap;
use replicadr_lab::fixture::{self, ArchiveWriter, objects};
use replicadr_scheduler::verify::archive::{self, PvChecks};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["generate", items, out] => generate(items.parse().context("items")?, out),
        ["verify", tarball, list] => verify(tarball, list),
        _ => bail!(
            "usage: verify_bench generate <items> <out.tar.gz> | verify <tarball> <resource-list>"
        ),
    }
}

/// One VM in 20 items: a VM, two PVCs, two PVs; the rest ConfigMaps of about 1 KiB.
fn generate(items: usize, out: &str) -> anyhow::Result<()> {
    let file = BufWriter::new(File::create(out).with_context(|| format!("cannot create {out}"))?);
    let mut writer = ArchiveWriter::new(file)?;
    let mut written = 0;
    let mut index = 0;
    while written < items {
        if index % 4 == 0 && written + 5 <= items {
            let namespace = format!("vms-{}", index % 50);
            let vm = format!("vm-{index}");
            let claims = [format!("{vm}-root"), format!("{vm}-data")];
            writer.add(
                "virtualmachines.kubevirt.io",
                &objects::vm(&namespace, &vm, &[&claims[0], &claims[1]]),
            )?;
            for claim in &claims {
                let pv = format!("pv-{claim}");
                writer.add(
                    "persistentvolumeclaims",
                    &objects::pvc(&namespace, claim, &pv),
                )?;
                writer.add(
                    "persistentvolumes",
                    &objects::nfs_pv(
                        &pv,
                        "nfs-a.example.com",
                        &format!("/exports/vms/{claim}"),
                        "Retain",
                    ),
                )?;
            }
            written += 5;
        } else {
            writer.add(
                "configmaps",
                &objects::config_map(&format!("apps-{}", index % 50), &format!("cm-{index}"), 900),
            )?;
            written += 1;
        }
        index += 1;
    }
    let (file, list) = writer.finish()?;
    file.into_inner().context("flush")?;
    std::fs::write(format!("{out}.resource-list.json.gz"), list)?;
    Ok(())
}

fn verify(tarball: &str, list: &str) -> anyhow::Result<()> {
    let map = SiteMap::from_yaml(fixture::SITE_MAP)?;
    let checks = PvChecks::for_every_site(&map);
    let started = Instant::now();
    let resource_list = archive::ResourceList::parse(std::fs::read(list)?)?;
    let source = File::open(tarball).with_context(|| format!("cannot open {tarball}"))?;
    let mut inventory = archive::inspect(source, &checks)?;
    archive::cross_check(&mut inventory, Some(&resource_list), &[], || {
        File::open(tarball)
    });
    let seconds = started.elapsed().as_secs_f64();
    let stats = &inventory.stats;
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    let megabytes = stats.uncompressed_bytes as f64 / 1e6;
    let report = serde_json::json!({
        "items": stats.items,
        "findings": inventory.findings.counts().values().sum::<u64>(),
        "compressedBytes": stats.compressed_bytes,
        "uncompressedBytes": stats.uncompressed_bytes,
        "seconds": seconds,
        "mbPerSecond": megabytes / seconds,
        "peakRssKiB": peak_rss_kib(),
    });
    println!("{report}");
    Ok(())
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
