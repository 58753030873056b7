//! `cargo xtask vm`: a stock Debian kernel in QEMU, for what this host's kernel cannot do (it has
//! no sch_fq, no netem, no modules), or what an older kernel does differently (`--kernel`:
//! bookworm's 6.1, bullseye's 5.10). Set-up resolves the distro kernel package at run time (the
//! archive drops superseded builds), extracts it, and builds a busybox initramfs with the modules
//! the lab needs and their dependencies, cached per kernel. A run boots the kernel (TCG; `--icount` for virtual,
//! deterministic time), mounts the host's `/` read-only over 9p plus a writable work directory at
//! the same path, runs a shell command chrooted into the host root (host-built binaries run as
//! they are), and returns its exit code.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::root;

/// Modules the guest loads, in dependency order after resolution.
const MODULES: &[&str] = &[
    "9p",
    "9pnet_virtio",
    "virtio_pci",
    "veth",
    "bridge",
    "vxlan",
    "sch_fq",
    "sch_netem",
    "sch_ingress",
    "cls_bpf",
    "sch_tbf",
];

pub struct Vm {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kver: String,
    /// The kernel line, as `--kernel` names it ("5.10", "6.1").
    pub label: &'static str,
}

fn out(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A hash of what goes into the initramfs: a change of the module list or of /init rebuilds it.
fn recipe_hash() -> u32 {
    MODULES
        .join(",")
        .bytes()
        .chain(INIT.bytes())
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
}

/// The guest kernels the harness knows: Debian's stock `linux-image-amd64` of a release. The
/// package name is resolved at set-up (the archive drops superseded builds), never pinned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian 11 bullseye: 5.10 (no `bpf_skb_set_tstamp`, no TCX).
    #[value(name = "5.10")]
    Bullseye,
    /// Debian 12 bookworm: 6.1 (the host's own release; no TCX).
    #[default]
    #[value(name = "6.1")]
    Bookworm,
    /// Debian 12 bookworm-backports: 6.12 (trixie's kernel line; TCX).
    #[value(name = "6.12")]
    Backports,
}

/// `--kernel` of `vm test`: one kernel or all (a type of its own: clap reads an `Option<Vec<_>>`
/// field as a list of values).
#[derive(Clone, Debug)]
pub struct Kernels(pub Vec<Kernel>);

/// `--kernel`: one of the kernels by its line (5.10, 6.1, 6.12), or `all`.
pub fn parse_kernels(s: &str) -> Result<Kernels, String> {
    use clap::ValueEnum as _;
    if s == "all" {
        return Ok(Kernels(Kernel::value_variants().to_vec()));
    }
    Kernel::from_str(s, false)
        .map(|k| Kernels(vec![k]))
        .map_err(|_| format!("'{s}' is not a kernel here; use 5.10, 6.1, 6.12 or all"))
}

impl Kernel {
    pub fn label(self) -> &'static str {
        match self {
            Kernel::Bullseye => "5.10",
            Kernel::Bookworm => "6.1",
            Kernel::Backports => "6.12",
        }
    }

    /// The suite of this kernel's release that a host `bookworm*` suite maps to in the private
    /// apt state, or None to leave that entry out (bookworm itself needs no private state).
    fn suite(self, host: &str) -> Option<String> {
        let rest = host.strip_prefix("bookworm")?;
        match self {
            Kernel::Bookworm => None,
            // bookworm -> bullseye, bookworm-security -> bullseye-security, ...
            Kernel::Bullseye => (rest.is_empty() || rest.starts_with('-'))
                .then_some(())
                .filter(|()| rest != "-backports")
                .map(|()| format!("bullseye{rest}")),
            // Only the main archive carries backports.
            Kernel::Backports => rest.is_empty().then(|| "bookworm-backports".to_string()),
        }
    }
}

/// apt, for `kernel`'s release. Bookworm is what this host's own sources serve. Bullseye and
/// bookworm-backports get a private apt state under `dir` (sources, lists, cache), used only
/// through `-o` options for resolving and downloading the kernel package: the host's sources and
/// lists are never touched.
struct Apt {
    opts: Vec<String>,
    /// For bullseye: the private sources list, written from the host's own Debian sources.
    private: Option<PathBuf>,
}

impl Apt {
    fn new(kernel: Kernel, dir: &Path) -> Result<Apt> {
        if kernel == Kernel::Bookworm {
            return Ok(Apt {
                opts: vec![],
                private: None,
            });
        }
        let state = dir.join("apt");
        for d in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(state.join(d))?;
        }
        let list = state.join("sources.list");
        let want = private_sources(kernel)?;
        if fs::read_to_string(&list).ok().as_deref() != Some(want.as_str()) {
            fs::write(&list, &want)?;
        }
        let o = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
        let mut opts = Vec::new();
        opts.extend(o("Dir::Etc::SourceList", &list));
        opts.extend(o("Dir::Etc::SourceParts", &state.join("no-parts")));
        opts.extend(o("Dir::State::Lists", &state.join("lists")));
        opts.extend(o("Dir::Cache", &state.join("cache")));
        opts.extend(o("Dir::State::status", Path::new("/dev/null")));
        opts.extend(["-o".into(), "APT::Sandbox::User=root".into()]);
        Ok(Apt {
            opts,
            private: Some(list),
        })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.args(&self.opts);
        c
    }

    fn update(&self) -> Result<()> {
        if let Some(l) = &self.private {
            eprintln!("vm: apt-get update with {}", l.display());
        }
        out(self.cmd("apt-get").args(["update", "-qq"])).map(drop)
    }
}

/// A sources list for `kernel`'s release built from this host's bookworm entries (deb822
/// `.sources` files or one-line `sources.list`): the same archives, signing keys and components,
/// suites mapped by [`Kernel::suite`].
fn private_sources(kernel: Kernel) -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        files.extend(v);
    }
    let mut lines = Vec::new();
    for f in files {
        let name = f.to_string_lossy().into_owned();
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if name.ends_with(".sources") {
            lines.extend(from_deb822(kernel, &text));
        } else if name.ends_with(".list") {
            lines.extend(from_one_line(kernel, &text));
        }
    }
    lines.dedup();
    ensure!(
        !lines.is_empty(),
        "vm --kernel {}: no Debian bookworm entry in /etc/apt/sources.list or sources.list.d to derive the release's from; add one (deb URI bookworm main)",
        kernel.label()
    );
    Ok(lines.join("\n") + "\n")
}

fn from_deb822(kernel: Kernel, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(k)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if !types.split_whitespace().any(|t| t == "deb")
            || field("Enabled").is_some_and(|e| e == "no")
        {
            continue;
        }
        let comps = field("Components").unwrap_or_else(|| "main".into());
        let signed = field("Signed-By")
            .filter(|k| k.starts_with('/'))
            .map(|k| format!("[signed-by={k}] "))
            .unwrap_or_default();
        for uri in uris.split_whitespace() {
            for s in suites.split_whitespace().filter_map(|s| kernel.suite(s)) {
                out.push(format!("deb {signed}{uri} {s} {comps}"));
            }
        }
    }
    out
}

fn from_one_line(kernel: Kernel, text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("deb ")?;
            let (opts, rest) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (o, r) = r.split_once(']')?;
                    (format!("[{o}] "), r)
                }
                None => (String::new(), rest),
            };
            let mut w = rest.split_whitespace();
            let (uri, suite) = (w.next()?, kernel.suite(w.next()?)?);
            let comps: Vec<&str> = w.collect();
            Some(format!("deb {opts}{uri} {suite} {}", comps.join(" ")))
        })
        .collect()
}

/// The default guest (6.1), prepared once; see [`setup_kernel`].
pub fn setup() -> Result<Vm> {
    setup_kernel(Kernel::default())
}

/// Downloads and prepares `kernel` and its initramfs under target/vm/<kernel> (once per kernel
/// build and initramfs recipe; each kernel has its own cache).
pub fn setup_kernel(kernel: Kernel) -> Result<Vm> {
    let top = root().join("target/vm");
    let dir = top.join(kernel.label());
    fs::create_dir_all(&dir)?;
    // Images of the layout before per-kernel directories (~70 MB) go.
    for e in fs::read_dir(&top)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if e.path().is_file() && (n.starts_with("initrd-") || n.starts_with("vmlinuz-")) {
            fs::remove_file(e.path())?;
        }
    }
    let apt = Apt::new(kernel, &dir)?;
    let resolve = || -> Option<String> {
        let deps = out(apt.cmd("apt-cache").args(["depends", "linux-image-amd64"])).ok()?;
        deps.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-"))
                .map(String::from)
        })
    };
    let pkg = match resolve() {
        Some(p) => p,
        None => {
            // No or stale package lists: refresh once.
            apt.update()?;
            resolve().context("apt-cache depends linux-image-amd64 names no kernel package")?
        }
    };
    let kver = pkg.trim_start_matches("linux-image-").to_string();
    ensure!(
        kver.starts_with(&format!("{}.", kernel.label())),
        "vm --kernel {}: apt resolved linux-image-amd64 to {pkg}, another kernel line",
        kernel.label()
    );
    let vm = Vm {
        kernel: dir.join(format!("vmlinuz-{kver}")),
        initrd: dir.join(format!("initrd-{kver}-{:08x}.gz", recipe_hash())),
        dir: dir.clone(),
        kver: kver.clone(),
        label: kernel.label(),
    };
    if vm.kernel.exists() && vm.initrd.exists() {
        return Ok(vm);
    }
    eprintln!("vm: preparing {pkg}");
    // Earlier kernels' or recipes' images go.
    for e in fs::read_dir(&dir)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("initrd-") || n.starts_with("vmlinuz-") {
            fs::remove_file(e.path())?;
        }
    }
    let x = dir.join("kernel");
    let _ = fs::remove_dir_all(&x);
    for e in fs::read_dir(&dir)?.flatten() {
        if e.file_name().to_string_lossy().ends_with(".deb") {
            fs::remove_file(e.path())?;
        }
    }
    if out(apt
        .cmd("apt-get")
        .args(["download", &pkg])
        .current_dir(&dir))
    .is_err()
    {
        // A superseded build vanished from the archive: refresh the lists and try again.
        apt.update()?;
        out(apt
            .cmd("apt-get")
            .args(["download", &pkg])
            .current_dir(&dir))?;
    }
    let deb = fs::read_dir(&dir)?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .context("no .deb downloaded")?
        .path();
    out(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    fs::copy(x.join(format!("boot/vmlinuz-{kver}")), &vm.kernel)?;
    out(Command::new("depmod").arg("-b").arg(&x).arg(&kver))?;

    // The initramfs: busybox, the modules in load order, and /init.
    let ird = dir.join("initramfs");
    let _ = fs::remove_dir_all(&ird);
    for d in ["bin", "proc", "sys", "dev", "host", "modules"] {
        fs::create_dir_all(ird.join(d))?;
    }
    fs::copy("/bin/busybox", ird.join("bin/busybox"))
        .context("busybox-static is needed (scripts/bootstrap.sh)")?;
    let mut order: Vec<String> = Vec::new();
    for m in MODULES {
        let s = out(Command::new("modprobe").arg("-d").arg(&x).args([
            "-S",
            &kver,
            "--show-depends",
            m,
        ]))?;
        for l in s.lines() {
            if let Some(path) = l.strip_prefix("insmod ") {
                let path = path.split_whitespace().next().unwrap_or_default();
                let name = Path::new(path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if !order.contains(&name) {
                    fs::copy(path, ird.join("modules").join(&name))
                        .with_context(|| format!("copying {path}"))?;
                    order.push(name);
                }
            }
        }
    }
    fs::write(ird.join("modules.order"), order.join("\n") + "\n")?;
    fs::write(ird.join("init"), INIT)?;
    out(Command::new("chmod").arg("755").arg(ird.join("init")))?;
    out(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        ird.display(),
        vm.initrd.display()
    )))?;
    fs::remove_dir_all(&x)?;
    fs::remove_file(&deb)?;
    eprintln!("vm: {kver} ready ({} modules)", order.len());
    Ok(vm)
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m 2>/dev/null; done
arg() { sed -n "s/.*injector.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
ROOT=$(arg root)
WORK=$(arg work)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host
# The workspace may live under /tmp or /run, which get a tmpfs below: keep it aside, put it back.
mkdir -p /ws && mount --bind /host$ROOT /ws
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t bpf bpf /host/sys/fs/bpf
mount -t tmpfs tmpfs /host/tmp
mount -t tmpfs tmpfs /host/run
if [ ! -d /host$ROOT/target ]; then mkdir -p /host$ROOT && mount --bind /ws /host$ROOT; fi
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work /host$WORK
chroot /host /bin/sh -c "cd $WORK && /bin/sh $WORK/cmd.sh > $WORK/out.log 2>&1; echo \$? > $WORK/rc"
sync
echo o > /proc/sysrq-trigger
sleep 5
"#;

/// KVM only with real VMX/SVM: a paravirtual /dev/kvm (as on these machines) kills a stock kernel
/// early ("emulation failure" on cmpxchg16b), so without the CPU flags it is software emulation.
fn kvm_usable() -> bool {
    std::path::Path::new("/dev/kvm").exists()
        && fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
            c.lines()
                .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
        })
}

/// Boots the guest and runs `cmd` (a shell command line) chrooted into the host root, with the
/// workspace as working directory; returns its exit code and output.
pub fn run(vm: &Vm, cmd: &str, icount: bool, timeout: Duration) -> Result<(i32, String)> {
    let work = vm.dir.join(format!("work-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let icount_env = if icount { " INJECTOR_VM_ICOUNT=1" } else { "" };
    let script = format!(
        "export PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp INJECTOR_VM=1{icount_env}\ncd {}\n{cmd}\n",
        root().display()
    );
    fs::write(work.join("cmd.sh"), script)?;
    let accel: &[&str] = if icount {
        &["-accel", "tcg", "-smp", "1", "-icount", "shift=0,sleep=off"]
    } else if kvm_usable() {
        &["-accel", "kvm", "-smp", "2"]
    } else {
        &["-accel", "tcg,thread=multi", "-smp", "2"]
    };
    let append = format!(
        "console=ttyS0 quiet panic=-1 injector.root={} injector.work={}",
        root().display(),
        work.display()
    );
    let mut child = Command::new("qemu-system-x86_64")
        .args(accel)
        .args([
            "-cpu",
            "max",
            "-m",
            "2048",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-serial",
            "mon:stdio",
        ])
        .arg("-kernel")
        .arg(&vm.kernel)
        .arg("-initrd")
        .arg(&vm.initrd)
        .args(["-append", &append])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=work,security_model=none,multidevs=remap",
            work.display()
        ))
        .stdin(Stdio::null())
        .stdout(fs::File::create(work.join("console.log"))?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86; scripts/bootstrap.sh)")?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let console = fs::read_to_string(work.join("console.log")).unwrap_or_default();
            bail!("vm: no result after {timeout:?}; console:\n{console}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = fs::read_to_string(work.join("out.log")).unwrap_or_default();
    let rc = fs::read_to_string(work.join("rc"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let console = fs::read_to_string(work.join("console.log")).unwrap_or_default();
    let _ = fs::remove_dir_all(&work);
    match rc {
        Some(rc) => Ok((rc, output)),
        None => bail!(
            "vm: the command did not finish (qemu {status}); console:\n{console}\noutput:\n{output}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bullseye_entries_follow_the_hosts_bookworm_ones() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb\nURIs: http://other.example/x\nSuites: nodistro\nComponents: main\n";
        assert_eq!(
            from_deb822(Kernel::Bullseye, deb822),
            [
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bullseye main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bullseye-updates main",
            ]
        );
        let one = "# comment\ndeb http://mirror.example/debian-security bookworm-security main contrib\ndeb [arch=amd64] http://x.example/apt cloud-sdk-bookworm main\n";
        assert_eq!(
            from_one_line(Kernel::Bullseye, one),
            ["deb http://mirror.example/debian-security bullseye-security main contrib"]
        );
    }

    #[test]
    fn backports_entries_come_from_the_main_archive_only() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            from_deb822(Kernel::Backports, deb822),
            ["deb http://mirror.example/debian bookworm-backports main"]
        );
        assert!(
            from_one_line(
                Kernel::Bookworm,
                "deb http://m.example/debian bookworm main"
            )
            .is_empty()
        );
    }
}
