#!/usr/bin/env bash
# Builds the test binaries from Go modules (SPEC §8) into a cache outside the
# work tree, keyed by version, so fresh clones on the same machine reuse it:
#   kube-apiserver  k8s.io/kubernetes/cmd/kube-apiserver
#   etcd            ./etcd, etcd's own main
#   hollow-node     ./hollownode, kubemark's hollow kubelet and kube-proxy
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager
#                   (tests that need a controller run only that one, e.g. the
#                   garbage collector)
#   etcdutl         go.etcd.io/etcd/etcdutl/v3, etcd's offline tool (snapshot restore)
# Usage: build.sh [binary...]   (default: all of them)
#
# Each binary has its own stamp (.stamp-<binary>): a hash of the modules and
# versions of every package it links (go list -deps), its own sources, the
# Go version and this script. Adding a binary to this module, and the
# requirements that come with it, therefore rebuilds only what really changed.
set -euo pipefail

version=v1.36.3
here=$(cd "$(dirname "$0")" && pwd)
self=$here/$(basename "$0")
dir=${HERD_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd/bin/$version}
mkdir -p "$dir"
cd "$here"

minor=${version#v1.}; minor=${minor%%.*}
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$version"

# binary -> package, ldflags, and the local sources its stamp covers.
declare -A pkg=([kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver [etcd]=./etcd [hollow-node]=./hollownode [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager [etcdutl]=go.etcd.io/etcd/etcdutl/v3)
declare -A flags=([kube-apiserver]="$k8s_ldflags" [etcd]="-s -w" [hollow-node]="$k8s_ldflags" [kube-controller-manager]="$k8s_ldflags" [etcdutl]="-s -w")
declare -A what=([kube-apiserver]="about 10 minutes on 2 cores the first time" [etcd]="about a minute" [hollow-node]="a few minutes after kube-apiserver, which shares most of its packages" [kube-controller-manager]="a minute or two after kube-apiserver and the hollow node, which share all but ~150 of its packages" [etcdutl]="under a minute after etcd, which shares most of its packages")

stamp() {
  local b=$1
  {
    sed -n '/^# stamp-begin/,/^# stamp-end/p' "$self"
    go version
    echo "${flags[$b]}"
    go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{with .Replace}} => {{.Path}} {{.Version}}{{end}}{{end}}' "${pkg[$b]}" | sort -u
    if [[ ${pkg[$b]} == ./* ]]; then cat "${pkg[$b]}"/*.go; fi
  } | sha256sum | cut -c1-16
}

# go build -v names each package as it compiles; show a line every 250 so a
# long build visibly makes progress. Lines that are not bare package paths
# (compile errors) pass through whole.
progress() { awk -v what="$1" '/ |^#/ { print; fflush(); next } { n++; if (n % 250 == 0) { printf "  %s: %d packages compiled\n", what, n; fflush() } }'; }

# stamp-begin: what the build does; a change here rebuilds every binary.
build() {
  local b=$1 start=$SECONDS
  echo "building $b $version from Go modules into $dir (${what[$b]})"
  go build -v -trimpath -ldflags "${flags[$b]}" -o "$dir/$b.tmp" "${pkg[$b]}" 2>&1 | progress "$b"
  mv "$dir/$b.tmp" "$dir/$b"
  echo "$b built in $((SECONDS - start))s"
}
# stamp-end

targets=("$@")
(( ${#targets[@]} )) || targets=(kube-apiserver etcd hollow-node kube-controller-manager etcdutl)
for b in "${targets[@]}"; do
  [[ -n ${pkg[$b]:-} ]] || { echo "build.sh: unknown binary $b (want kube-apiserver, etcd, hollow-node, kube-controller-manager or etcdutl)" >&2; exit 2; }
  key=$(stamp "$b")
  if [[ -x $dir/$b && "$(cat "$dir/.stamp-$b" 2>/dev/null)" == "$key" ]]; then
    echo "$b $version: cached in $dir"
    continue
  fi
  build "$b"
  echo "$key" > "$dir/.stamp-$b"
  if [[ $b == kube-apiserver ]]; then "$dir/kube-apiserver" --version; fi
done
