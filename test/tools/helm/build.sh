#!/usr/bin/env bash
# Builds Helm from Go modules (pinned in this directory's go.mod) into a cache
# outside the work tree, keyed by version, so fresh clones on the same machine
# reuse it: ${HERD_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd/bin}/helm-<version>.
# Helm is not a Debian package here; `make chart-test` needs it. A stamp of
# this module's go.mod/go.sum and this script decides whether to rebuild.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -nE 's/^(require)?[[:space:]]*helm\.sh\/helm\/v3 (v[^ ]+).*/\2/p' "$here/go.mod" | head -1)
[[ -n $version ]] || { echo "test/tools/helm/go.mod does not require helm.sh/helm/v3" >&2; exit 1; }
dir=${HERD_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herd/bin}
bin=$dir/helm-$version
mkdir -p "$dir"
key=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)
if [[ -x $bin && "$(cat "$bin.stamp" 2>/dev/null)" == "$key" ]]; then
  echo "helm $version: cached at $bin"
  exit 0
fi
cd "$here"
start=$SECONDS
echo "building helm $version from Go modules into $bin (a few minutes on 2 cores the first time)"
# Helm reports its version from these variables; without them `helm version`
# says v3.x-dev and chart apiVersion checks still work, but say what we built.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" helm.sh/helm/v3/cmd/helm
mv "$bin.tmp" "$bin"
echo "$key" > "$bin.stamp"
"$bin" version --short
echo "helm $version built in $((SECONDS - start))s"
