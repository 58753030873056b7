//! `cargo xtask vm`: a stock Debian kernel in QEMU, for what this host's kernel cannot do (it has
//! no sch_fq, no netem, no modules). Set-up resolves the distro kernel package at run time (the
//! archive drops superseded builds), extracts it, and builds a busybox initramfs with the modules
//! the lab needs and their dependencies. A run boots the kernel (TCG; `--icount` for virtual,
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

/// Downloads and prepares the guest kernel and initramfs under target/vm (once per kernel build).
pub fn setup() -> Result<Vm> {
    let dir = root().join("target/vm");
    fs::create_dir_all(&dir)?;
    let resolve = || -> Option<String> {
        let deps = out(Command::new("apt-cache").args(["depends", "linux-image-amd64"])).ok()?;
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
            out(Command::new("apt-get").args(["update", "-qq"]))?;
            resolve().context("apt-cache depends linux-image-amd64 names no kernel package")?
        }
    };
    let kver = pkg.trim_start_matches("linux-image-").to_string();
    let vm = Vm {
        kernel: dir.join(format!("vmlinuz-{kver}")),
        initrd: dir.join(format!("initrd-{kver}-{:08x}.gz", recipe_hash())),
        dir: dir.clone(),
        kver: kver.clone(),
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
    if out(Command::new("apt-get")
        .args(["download", &pkg])
        .current_dir(&dir))
    .is_err()
    {
        // A superseded build vanished from the archive: refresh the lists and try again.
        out(Command::new("apt-get").args(["update", "-qq"]))?;
        out(Command::new("apt-get")
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
