#!/usr/bin/env bash
# Builds kube-apiserver from Debian's `kubernetes` source package (upstream tree with vendor/),
# offline, into a cache keyed on the source version; a no-op when that version is cached.
#
# usage: build-kube-apiserver.sh          build if missing; print the binary's path last
#        build-kube-apiserver.sh --check  print the path; exit 3 if it is not built yet
# Cache: ${XDG_CACHE_HOME:-~/.cache}/injector/kube-apiserver/<debian source version>/kube-apiserver
# Needs deb-src lists, golang-1.19-go (scripts/bootstrap.sh sets both up). About 5 min on 2 cores.
set -euo pipefail
say() { echo "build-kube-apiserver: $*" >&2; }
GO=${GO:-/usr/lib/go-1.19/bin/go}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/injector/kube-apiserver

# The current source version (Debian keeps only the newest: resolved now, never pinned).
VERSION=$(apt-cache showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
[ -n "$VERSION" ] || {
  say "apt knows no source package 'kubernetes': enable deb-src and update the lists (bash scripts/bootstrap.sh does)"
  exit 2
}
OUT="$CACHE/$VERSION"
BIN="$OUT/kube-apiserver"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if [ "${1:-}" = "--check" ]; then
  say "kube-apiserver $VERSION is not built: run \`cargo xtask cluster build\` (or bash scripts/build-kube-apiserver.sh), ~5 min once"
  echo "$BIN"; exit 3
fi
[ -x "$GO" ] || { say "$GO missing: apt-get install golang-1.19-go (bash scripts/bootstrap.sh does)"; exit 2; }

# "1.20.5+really1.20.2-1" -> v1.20.2 (the tree inside), "1.28.0-2" -> v1.28.0
UPSTREAM=${VERSION%-*}; UPSTREAM=${UPSTREAM#*:}; UPSTREAM=${UPSTREAM##*really}; UPSTREAM=${UPSTREAM%%+*}
MAJOR=${UPSTREAM%%.*}; MINOR=${UPSTREAM#*.}; MINOR=${MINOR%%.*}
T0=$(date +%s)
say "building kube-apiserver v$UPSTREAM from Debian source $VERSION into $OUT (~5 min)"
B=$(mktemp -d /tmp/injector-kas-build.XXXXXX); trap 'rm -rf "$B"' EXIT; cd "$B"
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

# The version the binary and /version report (hack/lib/version.sh sets these same variables).
LDFLAGS="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=v$UPSTREAM -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=archive"
done
mkdir -p "$OUT"
"$GO" build -ldflags "$LDFLAGS" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
"$OUT/kube-apiserver.tmp" --version >&2
mv "$OUT/kube-apiserver.tmp" "$BIN"
say "built in $(($(date +%s) - T0)) s"
echo "$BIN"
