//! The images a node runs, made here without a registry as docker-archive tarballs for
//! `ctr -n k8s.io images import`:
//! - [`PAUSE`]: the pod sandbox, Kubernetes' own `build/pause/linux/pause.c` (scripts/build-k8s.sh
//!   builds it static, from the same source tree as kubelet);
//! - [`BUSYBOX`]: the application pods, Debian's busybox-static with its applets (`httpd`, `wget`,
//!   `nc`, `sleep`) and a page to serve;
//! - the node daemon's image, `localhost/injector:<version>`, by scripts/build-image.sh (the
//!   name deploy/kustomization.yaml gives the DaemonSet).
//!
//! The two small ones are written by hand (a layer tar, its config, a manifest: what `docker
//! save` writes): tar with fixed owners, order and times, so the same inputs give the same image
//! ID, and no container storage on the host is touched.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;

use crate::cmd::run;

/// kubelet's `--pod-infra-container-image`.
pub const PAUSE: &str = "localhost/pause:3.4.1";
/// The application pods' image.
pub const BUSYBOX: &str = "localhost/busybox:injector";
/// What [`BUSYBOX`]'s httpd serves at `/` (from `/www`).
pub const PAGE: &str = "hello from a real pod\n";

fn sha256(path: &Path) -> Result<String> {
    let out = run("sha256sum", &[&path.display().to_string()])?;
    out.split_whitespace()
        .next()
        .map(String::from)
        .with_context(|| format!("sha256sum {}: no digest", path.display()))
}

/// Packs directory `rootfs` as image `reference` with `entrypoint` into the docker-archive `out`.
fn docker_archive(rootfs: &Path, reference: &str, entrypoint: &[&str], out: &Path) -> Result<()> {
    let work = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let layer = work.join("layer.tar");
    let status = Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--sort=name",
            "--mtime=@0",
            "-C",
        ])
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .context("cannot run tar")?;
    ensure!(status.success(), "tar of {} failed", rootfs.display());
    let diff = sha256(&layer)?;
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint, "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "injector-tests node::images"}],
    });
    let config_path = work.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
    let cid = sha256(&config_path)?;
    std::fs::rename(&config_path, work.join(format!("{cid}.json")))?;
    std::fs::create_dir(work.join(&diff))?;
    std::fs::rename(&layer, work.join(&diff).join("layer.tar"))?;
    let manifest = json!([{
        "Config": format!("{cid}.json"), "RepoTags": [reference], "Layers": [format!("{diff}/layer.tar")],
    }]);
    std::fs::write(work.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    let status = Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cf")
        .arg(out)
        .args(["manifest.json", &format!("{cid}.json"), &diff])
        .status()
        .context("cannot run tar")?;
    ensure!(status.success(), "packing {} failed", out.display());
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// The pause image from the `pause` binary, into `dir/pause.tar`.
fn pause(dir: &Path, pause_bin: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs-pause");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(pause_bin, root.join("pause"))
        .with_context(|| format!("copying {}", pause_bin.display()))?;
    let out = dir.join("pause.tar");
    docker_archive(&root, PAUSE, &["/pause"], &out)?;
    std::fs::remove_dir_all(&root)?;
    Ok(out)
}

/// The application image from Debian's busybox-static, into `dir/busybox.tar`.
fn busybox(dir: &Path) -> Result<PathBuf> {
    let bb = Path::new("/bin/busybox");
    ensure!(
        bb.exists(),
        "/bin/busybox not found: apt-get install busybox-static (bash scripts/bootstrap.sh does)"
    );
    let root = dir.join("rootfs-busybox");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(bb, root.join("bin/busybox"))?;
    for applet in run("/bin/busybox", &["--list"])?.lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    std::fs::write(root.join("www/index.html"), PAGE)?;
    let out = dir.join("busybox.tar");
    docker_archive(&root, BUSYBOX, &["/bin/sh"], &out)?;
    std::fs::remove_dir_all(&root)?;
    Ok(out)
}

/// The injector image as `dir/injector.tar`; its reference. It holds the workspace's release
/// binary (`target/release/injector`: `cargo xtask test` and `cargo xtask node up` build it
/// first), or one `cargo build --release` makes when there is none. (Building it from
/// inside a test rebuilt it every time: cargo's environment in a test differs.)
fn injector(dir: &Path) -> Result<(PathBuf, String)> {
    let out = dir.join("injector.tar");
    let script = super::workspace_root().join("scripts/build-image.sh");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| super::workspace_root().join("target"), PathBuf::from);
    let release = Some(target.join("release/injector")).filter(|b| b.exists());
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    match &release {
        Some(bin) => cmd.arg("--bin").arg(bin),
        None => cmd.arg("--release"),
    };
    let res = cmd
        .arg("--save")
        .arg(&out)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(
        res.status.success(),
        "{} {} --save {} failed ({})",
        script.display(),
        release.map_or("--release".into(), |b| format!("--bin {}", b.display())),
        out.display(),
        res.status
    );
    let reference = String::from_utf8_lossy(&res.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok((out, reference))
}

/// Every image a node needs in `dir`: (tarball, reference) of pause, busybox, injector.
pub(super) fn build_all(dir: &Path, pause_bin: &Path) -> Result<Vec<(PathBuf, String)>> {
    Ok(vec![
        (pause(dir, pause_bin)?, PAUSE.to_string()),
        (busybox(dir)?, BUSYBOX.to_string()),
        injector(dir)?,
    ])
}
