#!/usr/bin/env bash
# Builds Kubernetes components from Debian's `kubernetes` source package (upstream tree with
# vendor/), offline, into a cache keyed on the source version; a no-op for what is cached.
#
# usage: build-k8s.sh [--check] COMPONENT...
#   COMPONENT: kube-apiserver kubelet kube-scheduler kube-controller-manager kube-proxy kubectl
#              (Go, from cmd/<name>), or pause (the pod sandbox's pause.c from build/pause, static gcc)
#   prints each component's path, one a line, in the order given; --check builds nothing and exits
#   3 if any is missing.
# Cache: ${XDG_CACHE_HOME:-~/.cache}/injector/<component>/<debian source version>/<component>
# Needs deb-src lists, golang-1.19-go, gcc + libc6-dev for pause (scripts/bootstrap.sh sets them
# up). On 2 cores: kube-apiserver ~5 min alone; kubelet, scheduler, controller-manager and proxy
# together ~5 min more (one Go build cache for the run).
set -euo pipefail
say() { echo "build-k8s: $*" >&2; }
GO=${GO:-/usr/lib/go-1.19/bin/go}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/injector
CHECK=
if [ "${1:-}" = "--check" ]; then CHECK=1; shift; fi
[ $# -gt 0 ] || { say "usage: build-k8s.sh [--check] COMPONENT..."; exit 2; }
for c in "$@"; do
  case $c in
    kube-apiserver|kubelet|kube-scheduler|kube-controller-manager|kube-proxy|kubectl|pause) ;;
    *) say "unknown component '$c': one of kube-apiserver kubelet kube-scheduler kube-controller-manager kube-proxy kubectl pause"; exit 2 ;;
  esac
done

# The current source version (Debian keeps only the newest: resolved now, never pinned).
VERSION=$(apt-cache showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
[ -n "$VERSION" ] || {
  say "apt knows no source package 'kubernetes': enable deb-src and update the lists (bash scripts/bootstrap.sh does)"
  exit 2
}
bin_of() { echo "$CACHE_ROOT/$1/$VERSION/$1"; }
missing=()
for c in "$@"; do [ -x "$(bin_of "$c")" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then for c in "$@"; do bin_of "$c"; done; exit 0; fi
if [ -n "$CHECK" ]; then
  say "${missing[*]} ($VERSION) not built: run \`cargo xtask cluster build\` / \`cargo xtask node build\` (or bash scripts/build-k8s.sh ${missing[*]}), minutes, once"
  for c in "$@"; do bin_of "$c"; done
  exit 3
fi
[ -x "$GO" ] || { say "$GO missing: apt-get install golang-1.19-go (bash scripts/bootstrap.sh does)"; exit 2; }

# "1.20.5+really1.20.2-1" -> v1.20.2 (the tree inside), "1.28.0-2" -> v1.28.0
UPSTREAM=${VERSION%-*}; UPSTREAM=${UPSTREAM#*:}; UPSTREAM=${UPSTREAM##*really}; UPSTREAM=${UPSTREAM%%+*}
MAJOR=${UPSTREAM%%.*}; MINOR=${UPSTREAM#*.}; MINOR=${MINOR%%.*}
T0=$(date +%s)
say "building ${missing[*]} v$UPSTREAM from Debian source $VERSION into $CACHE_ROOT"
B=$(mktemp -d /tmp/injector-k8s-build.XXXXXX); trap 'rm -rf "$B"' EXIT; cd "$B"
APT=(apt-get -qq -o APT::Sandbox::User=root)  # the build dir is private: no _apt sandbox
"${APT[@]}" source --download-only "kubernetes=$VERSION" >/dev/null
"${APT[@]}" download golang-github-modern-go-reflect2-dev >/dev/null
tar xzf kubernetes_*.orig.tar.gz
dpkg -x golang-github-modern-go-reflect2-dev_*_all.deb r2
K=$(find "$B" -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
[ -d "$K/vendor" ] || { say "no vendor/ in the source tarball of kubernetes $VERSION"; exit 1; }

# The vendored reflect2 1.0.1 crashes the apiserver built with Go >= 1.18 ("fatal error: fault"
# in mapiterinit on the first custom-resource request): Debian's 1.0.2 replaces it.
R2=$K/vendor/github.com/modern-go/reflect2
if [ -d "$R2" ]; then
  rm -f "$R2"/*.go "$R2"/*.s
  cp r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R2"/
fi
# kubelet would set kernel.panic=10, kernel.panic_on_oops=1 and vm.overcommit_memory=1 on the
# host it shares with everything else here; with this it only warns about them.
CM=$K/pkg/kubelet/cm/container_manager_linux.go
if [ -f "$CM" ]; then
  sed -i 's/^\tb := KernelTunableModify$/\tb := KernelTunableWarn/' "$CM"
  grep -q 'b := KernelTunableWarn' "$CM" || { say "cannot make kubelet leave the host's sysctls be: $CM changed"; exit 1; }
fi

go_needed=
for c in "${missing[@]}"; do [ "$c" = pause ] || go_needed=1; done
if [ -n "$go_needed" ]; then
  # GOPATH mode (as 1.20's build does), the tree linked in as k8s.io/kubernetes.
  mkdir -p "$K/.go/src/k8s.io" && ln -s ../../.. "$K/.go/src/k8s.io/kubernetes"
  cd "$K/.go/src/k8s.io/kubernetes"
  export GOROOT GOPATH=$K/.go GOCACHE=$B/gocache GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
  GOROOT=$(dirname "$(dirname "$GO")")
  # pkg/generated/openapi/zz_generated.openapi.go is not in the tarball: generated with the vendored
  # openapi-gen over every package tagged +k8s:openapi-gen (as Makefile.generated_files does).
  "$GO" build -o "$B/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
  IN=$(find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) -type f -name '*.go' -print0 |
    xargs -0 grep -l '^// *+k8s:openapi-gen=' | sed 's|^\./staging/src|vendor|; s|^\./||' | xargs -n1 dirname |
    grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' | LC_ALL=C sort -u |
    sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$B/openapi-gen" -i "$IN" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$B/openapi-report"
fi

# The version the binary and /version report (hack/lib/version.sh sets these same variables).
LDFLAGS="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=v$UPSTREAM -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=archive"
done
for c in "${missing[@]}"; do
  BIN=$(bin_of "$c"); mkdir -p "$(dirname "$BIN")"; T=$(date +%s)
  if [ "$c" = pause ]; then
    gcc -Os -Wall -Werror -static -DVERSION="v$UPSTREAM-injector" -o "$BIN.tmp" "$K/build/pause/linux/pause.c"
    strip "$BIN.tmp"
  else
    "$GO" build -ldflags "$LDFLAGS" -o "$BIN.tmp" "k8s.io/kubernetes/cmd/$c"
    "$BIN.tmp" --version >&2
  fi
  mv "$BIN.tmp" "$BIN"
  say "$c built in $(($(date +%s) - T)) s"
done
say "done in $(($(date +%s) - T0)) s"
for c in "$@"; do bin_of "$c"; done
