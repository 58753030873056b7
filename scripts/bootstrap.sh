#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test injector; a no-op when all is there.
# Called by `cargo xtask demo|test|lab` and by .ci/run; safe to run by hand any number of times.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
APT_PKGS=(rustc-web cargo-web libstd-rust-web-dev-bpf iproute2 iputils-ping prometheus
          qemu-system-x86 busybox-static cpio kmod iperf3 iptables ipset
          golang-1.19-go etcd-server openssl socat buildah podman runc chromium
          dnsmasq-base bind9-dnsutils
          containerd containernetworking-plugins conntrack gcc libc6-dev nftables)
say() { echo "bootstrap: $*" >&2; }

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 0. Source package lists, for the kube-apiserver the cluster tests build from Debian's `kubernetes`
#    source package (scripts/build-k8s.sh): the machine's own deb entries, as deb-src,
#    in one project-owned file (no mirror host written anywhere). Nothing when deb-src is on already.
SRC_LIST=/etc/apt/sources.list.d/injector-deb-src.sources
have_src() {
  grep -qsE '^Types:.*deb-src' /etc/apt/sources.list.d/*.sources ||
    grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list
}
if ! have_src; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    say "enabling deb-src from /etc/apt/sources.list.d/debian.sources in $SRC_LIST"
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | sudo_ tee "$SRC_LIST.tmp" >/dev/null
  elif [ -f /etc/apt/sources.list ]; then
    SRC_LIST=/etc/apt/sources.list.d/injector-deb-src.list
    say "enabling deb-src from /etc/apt/sources.list in $SRC_LIST"
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list | sudo_ tee "$SRC_LIST.tmp" >/dev/null
  else
    say "no /etc/apt/sources.list.d/debian.sources nor /etc/apt/sources.list to enable deb-src from"; exit 1
  fi
  sudo_ mv "$SRC_LIST.tmp" "$SRC_LIST"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi

# 1. Debian packages: the rustc built on LLVM 22 with a prebuilt `core` for bpfel-unknown-none,
#    and the network tools the lab and tests use. Versions are never pinned: the security archive
#    keeps only the newest build.
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -d /usr/lib/rustlib/bpfel-unknown-none/lib ] || { say "no prebuilt core under /usr/lib/rustlib/bpfel-unknown-none (libstd-rust-web-dev-bpf)"; exit 1; }

# 2. The rustup toolchain `deb-web` that aya-build uses for the eBPF crate.
if ! rustup run deb-web rustc --version >/dev/null 2>&1; then
  say "linking rustup toolchain deb-web -> /usr"
  rustup toolchain link deb-web /usr
fi

# 3. bpf-linker built against the LLVM major that the BPF rustc reports.
llvm_major=$(rustup run deb-web rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || { say "cannot read the LLVM version from 'rustup run deb-web rustc -vV'"; exit 1; }
stamp="${CARGO_HOME:-$HOME/.cargo}/bin/.bpf-linker-llvm"
have=$(bpf-linker --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$BPF_LINKER_VERSION" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$llvm_major" ]; then
  lib=$(ldconfig -p | awk -v m="libLLVM.so.$llvm_major" 'index($1, m) == 1 {print $NF; exit}')
  if [ -z "$lib" ]; then
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "libllvm$llvm_major" >/dev/null
    lib=$(ldconfig -p | awk -v m="libLLVM.so.$llvm_major" 'index($1, m) == 1 {print $NF; exit}')
  fi
  [ -n "$lib" ] || { say "libLLVM.so.$llvm_major not found by ldconfig"; exit 1; }
  prefix=$(mktemp -d)
  trap 'rm -rf "$prefix"' EXIT
  mkdir -p "$prefix/lib" && ln -s "$lib" "$prefix/lib/libLLVM.so"
  say "building bpf-linker $BPF_LINKER_VERSION for LLVM $llvm_major (~90 s)"
  LLVM_PREFIX="$prefix" cargo install --quiet --locked --force bpf-linker --version "=$BPF_LINKER_VERSION" \
    --no-default-features --features "llvm-$llvm_major"
  echo "$llvm_major" > "$stamp"
fi

# 4. bpffs, where the daemon pins its maps and links.
mountpoint -q /sys/fs/bpf 2>/dev/null || sudo_ mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
say "ok (rustc for BPF: LLVM $llvm_major, bpf-linker $BPF_LINKER_VERSION)"
