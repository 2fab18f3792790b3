#!/usr/bin/env bash
# Builds the Kubernetes control plane the test suite runs against (tests/cluster/): etcd,
# kube-apiserver, kwok and helm, each from its wrapper module under hack/controlplane/<binary>/
# (a go.mod whose `tool` line names the upstream main package, with the versions pinned by go.sum).
#
# Usage: hack/build-controlplane.sh [DEST]
#   DEST defaults to $GPUNUMA_CONTROLPLANE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/gpunuma/controlplane
#   (the same place tests/cluster looks). A binary is rebuilt only when it is missing or when its
#   wrapper's go.mod/go.sum, this script or the Go version changed (a .stamp file beside it).
#
# Why wrappers: k8s.io/kubernetes and go.etcd.io/etcd/server/v3 have replace directives in their own
# go.mod, so `go install pkg@version` refuses them. The kube-apiserver wrapper requires
# k8s.io/kubernetes and replaces every k8s.io/* staging module with its published v0.Y.Z.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-${GPUNUMA_CONTROLPLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gpunuma/controlplane}}"
binaries=(etcd kube-apiserver kwok helm)

if ! command -v go >/dev/null 2>&1; then
  echo "build-controlplane: 'go' is not on PATH: install Go >= 1.26 (https://go.dev/dl/) and retry" >&2
  exit 1
fi
mkdir -p "$dest"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly

# The version of module $2 that wrapper $1 resolves (from its go.sum, no network).
module_version() {
  go -C "$here/controlplane/$1" list -m -f '{{.Version}}' "$2"
}

# -X flags so that the binaries report their real version: Helm's kubeVersion checks and kubectl
# read the API server's /version, which would otherwise say v0.0.0.
version_ldflags() {
  local version
  case "$1" in
    kube-apiserver)
      version="$(module_version "$1" k8s.io/kubernetes)"
      local major="${version#v}" && major="${major%%.*}"
      local minor="${version#v*.}" && minor="${minor%%.*}"
      local package
      for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
          "$package" "$version" "$package" "$major" "$package" "$minor" "$package"
      done
      ;;
    kwok)
      version="$(module_version "$1" sigs.k8s.io/kwok)"
      printf -- '-X sigs.k8s.io/kwok/pkg/consts.Version=%s' "${version#v}"
      ;;
    helm)
      version="$(module_version "$1" helm.sh/helm/v3)"
      printf -- '-X helm.sh/helm/v3/internal/version.version=%s' "$version"
      ;;
    etcd) ;; # etcd's version is a constant in its source
  esac
}

go_version="$(go env GOVERSION)"
for binary in "${binaries[@]}"; do
  module="$here/controlplane/$binary"
  stamp="$(cat "$module/go.mod" "$module/go.sum" "$0" | sha256sum | cut -d' ' -f1) $go_version"
  if [[ -x "$dest/$binary" && -f "$dest/$binary.stamp" && "$(cat "$dest/$binary.stamp")" == "$stamp" ]]; then
    echo "build-controlplane: $binary is up to date in $dest"
    continue
  fi
  package="$(awk '$1 == "tool" { print $2 }' "$module/go.mod")"
  echo "build-controlplane: building $binary ($package) into $dest"
  started=$SECONDS
  go -C "$module" build -trimpath -ldflags "-s -w $(version_ldflags "$binary")" \
    -o "$dest/$binary.partial" "$package"
  mv "$dest/$binary.partial" "$dest/$binary"
  printf '%s\n' "$stamp" >"$dest/$binary.stamp"
  echo "build-controlplane: $binary built in $((SECONDS - started)) s"
done
