//! Builds injector-ebpf for bpfel-unknown-none with the Debian rustc-web toolchain (`deb-web`),
//! which ships a prebuilt `core` for BPF; see scripts/bootstrap.sh.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "injector-ebpf")
        .ok_or_else(|| anyhow!("injector-ebpf package not found"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("injector-ebpf has no manifest dir"))?;
    // The eBPF crate embeds the shared types; rebuild when they change too.
    println!("cargo:rerun-if-changed={}/../injector-common/src", root);
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "injector-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("deb-web"),
    )
    .context(
        "building the eBPF programs failed; run scripts/bootstrap.sh to install the BPF toolchain",
    )
}
