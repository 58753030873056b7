#!/usr/bin/env bash
# Builds the node daemon's container image (deploy/Containerfile) with buildah, without a registry:
# FROM scratch + the Debian packages of the binary's shared libraries + the binary.
#
#   scripts/build-image.sh [--release] [--bin PATH] [--tag REF] [--save FILE]
#
#   --release     build the binary with `cargo build --release -p injector` (the default: debug);
#                 the release one is what an image should hold (11.6 MB here, debug 177 MB)
#   --bin PATH    put this binary in the image instead of building one
#   --tag REF     the image reference (default localhost/injector:<workspace version>, the name
#                 deploy/kustomization.yaml maps `injector` to)
#   --save FILE   also write the image as a docker-archive tarball (`ctr -n k8s.io images import
#                 FILE`, `podman load -i FILE`)
#
# Idempotent and cached under target/image/ (or $CARGO_TARGET_DIR/image/): the .debs are fetched
# once per version, the rootfs is unpacked again only when they change, and the image is built
# again only when the Containerfile, the rootfs or the binary changed (a label on the image holds
# the hash of its inputs). Progress goes to stderr; the image reference is the last line on stdout.
# The image goes to the calling user's container storage (root: /var/lib/containers, where
# `podman run` as root finds it); tested as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "build-image: $*" >&2; }
die() { say "$*"; exit 1; }

PROFILE=debug BIN= TAG= SAVE=
while [ $# -gt 0 ]; do
  case "$1" in
    --release) PROFILE=release ;;
    --bin) BIN=$(realpath "${2:?--bin needs a path}"); shift ;;
    --tag) TAG=${2:?--tag needs an image reference}; shift ;;
    --save) SAVE=$(realpath -m "${2:?--save needs a file name}"); shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

for tool in buildah podman apt-get dpkg-deb dpkg-query ldd sha256sum chroot; do
  command -v "$tool" >/dev/null || die "'$tool' not found: run scripts/bootstrap.sh (it installs buildah and podman)"
done

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || die "no version under [workspace.package] in $ROOT/Cargo.toml"
TAG=${TAG:-localhost/injector:$VERSION}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/image
CTX=$OUT/context
mkdir -p "$OUT/debs" "$CTX"
# One build at a time per target directory (tests and a user may run this at once).
exec 9>"$OUT/.lock"
flock 9

# 1. The binary.
if [ -z "$BIN" ]; then
  args=(build -p injector)
  [ "$PROFILE" = release ] && args+=(--release)
  say "cargo ${args[*]}"
  (cd "$ROOT" && cargo "${args[@]}") >&2
  BIN=$TARGET/$PROFILE/injector
fi
[ -x "$BIN" ] || die "$BIN: not an executable"

# 2. The Debian packages that own the libraries the binary needs (ldd: on Debian 12 libc6 and
#    libgcc-s1), at their installed versions: the ones it was linked against.
owner() { # the package (with :arch) that ships library path $1; usrmerge aliases /lib and /usr/lib
  local p=$1 alt
  case "$p" in /usr/*) alt=${p#/usr} ;; *) alt=/usr$p ;; esac
  { dpkg-query -S "$p" 2>/dev/null || dpkg-query -S "$alt" 2>/dev/null; } | head -1 | cut -d: -f1-2 | sed 's/:$//;s/: .*//'
}
pkgs=()
if ldd "$BIN" >/dev/null 2>&1; then
  while read -r lib; do
    pkg=$(owner "$lib")
    [ -n "$pkg" ] || die "no installed package ships $lib (needed by $BIN)"
    pkgs+=("$pkg")
  done < <(ldd "$BIN" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' | sort -u)
  mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
else
  say "$BIN is statically linked: no libraries in the image"
fi

debs=()
for pkg in "${pkgs[@]}"; do
  ver=$(dpkg-query -W -f='${Version}' "$pkg")
  name=${pkg%%:*}
  deb=
  for f in "$OUT/debs/${name}"_*.deb; do
    [ -e "$f" ] || continue
    if [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then deb=$f; break; fi
  done
  if [ -z "$deb" ]; then
    say "apt-get download $pkg=$ver"
    tmp=$(mktemp -d "$OUT/debs/.dl.XXXXXX")
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2) ||
      { rm -rf "$tmp"; die "cannot download $pkg=$ver (the installed version) through apt: 'apt-get update', or upgrade $pkg and rebuild the binary"; }
    deb=$(ls "$tmp"/*.deb)
    mv "$deb" "$OUT/debs/" && rm -rf "$tmp"
    deb=$OUT/debs/$(basename "$deb")
  fi
  debs+=("$deb")
done

# 3. The rootfs: those packages unpacked, without what a process never reads (docs, lintian
#    overrides, locales, iconv modules: Rust does no iconv), again only when the .debs changed.
RECIPE=1 # bump when what goes into the rootfs changes
rootfs_key=$( { echo "recipe $RECIPE"; for d in "${debs[@]}"; do sha256sum "$d" | cut -d' ' -f1; done; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$OUT/rootfs.key" 2>/dev/null)" != "$rootfs_key" ] || [ ! -d "$CTX/rootfs" ]; then
  say "unpacking ${debs[*]##*/} into the rootfs"
  rm -rf "$CTX/rootfs.new" "$OUT/rootfs.key"
  mkdir -p "$CTX/rootfs.new"
  for d in "${debs[@]}"; do dpkg-deb -x "$d" "$CTX/rootfs.new"; done
  rm -rf "$CTX/rootfs.new"/usr/share "$CTX/rootfs.new"/usr/lib/*/gconv
  rm -rf "$CTX/rootfs"
  mv "$CTX/rootfs.new" "$CTX/rootfs"
  echo "$rootfs_key" > "$OUT/rootfs.key"
else
  say "rootfs cached ($(printf '%s ' "${debs[@]##*/}"))"
fi

# 4. The binary must start in that rootfs and nothing else (a missing library shows here, not in
#    the cluster).
if ! cmp -s "$BIN" "$CTX/injector"; then cp "$BIN" "$CTX/injector.new" && mv "$CTX/injector.new" "$CTX/injector"; fi
CHECK=$OUT/check
rm -rf "$CHECK" && cp -al "$CTX/rootfs" "$CHECK" && mkdir -p "$CHECK/usr/local/bin" && ln "$CTX/injector" "$CHECK/usr/local/bin/injector"
if [ "$(id -u)" -eq 0 ]; then runas=(chroot "$CHECK"); else runas=(unshare -r chroot "$CHECK"); fi
got=$("${runas[@]}" /usr/local/bin/injector --version 2>&1) || die "the binary does not run in the rootfs: $got"
rm -rf "$CHECK"
[ "$got" = "injector $VERSION" ] || die "the binary printed '$got', expected 'injector $VERSION'"

# 5. The image, unless one with the same inputs is there already.
inputs=$( { echo "$TAG"; echo "$rootfs_key"; sha256sum "$ROOT/deploy/Containerfile" "$CTX/injector" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
old_id=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
have=$(podman image inspect --format '{{index .Labels "dev.injector.image.inputs"}}' "$TAG" 2>/dev/null || true)
if [ -n "$old_id" ] && [ "$have" = "$inputs" ]; then
  say "$TAG is up to date (${old_id:0:12})"
else
  say "buildah build $TAG"
  # --timestamp 0: no build time in the image config or layer, so the same inputs give the same image.
  buildah build --quiet --timestamp 0 -f "$ROOT/deploy/Containerfile" \
    --label "dev.injector.image.inputs=$inputs" \
    --label "org.opencontainers.image.title=injector" \
    --label "org.opencontainers.image.version=$VERSION" \
    -t "$TAG" "$CTX" >&2
  new_id=$(podman image inspect --format '{{.Id}}' "$TAG")
  # The image this tag named before, if now nameless: ours to remove (never a prune, which would
  # take other nameless images too); left if a container still uses it.
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ] &&
     [ "$(podman image inspect --format '{{len .RepoTags}}' "$old_id" 2>/dev/null)" = 0 ]; then
    buildah rmi "$old_id" >/dev/null 2>&1 || true
  fi
  say "built $TAG (${new_id:0:12}, $(podman image inspect --format '{{.Size}}' "$TAG") bytes)"
fi

# 6. The archive for containerd (`ctr -n k8s.io images import FILE`) or `podman load`.
if [ -n "$SAVE" ]; then
  rm -f "$SAVE"
  buildah push --quiet "$TAG" "docker-archive:$SAVE:$TAG" >&2
  say "saved $TAG to $SAVE ($(stat -c %s "$SAVE") bytes)"
fi
echo "$TAG"
