//! `cargo xtask image [--release] [--save FILE]`: the node daemon's container image
//! (deploy/Containerfile), built with buildah without a registry by `scripts/build-image.sh`:
//! the binary, a rootfs of the Debian packages its libraries come from (cached under
//! target/image/), the image `localhost/injector:<version>`; `--save` also writes it as a
//! docker-archive for `ctr -n k8s.io images import`.

use std::path::Path;

use anyhow::Result;

use crate::{bootstrap, sh};

pub fn run(release: bool, save: Option<&Path>) -> Result<()> {
    bootstrap()?;
    let save = save.map(|p| p.to_string_lossy().into_owned());
    let mut args = vec!["scripts/build-image.sh"];
    if release {
        args.push("--release");
    }
    if let Some(f) = save.as_deref() {
        args.extend(["--save", f]);
    }
    // The script prints the image reference last.
    sh("bash", &args)
}
