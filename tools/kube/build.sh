#!/usr/bin/env bash
# Builds the bed's control-plane binaries once per machine into a cache outside the clone, keyed by
# go.mod + go.sum, and prints the directory. Called by ./dev (both verbs); a warm cache is a no-op.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)
cache=${LBCTL_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lbctl/kube}
out=$cache/$key
if [ -f "$out/.complete" ]; then
    echo "$out"
    exit 0
fi
# Go's usual install place may not be on a non-login shell's PATH.
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "tools/kube: Go >= 1.26 is needed for the first build of the control plane (not found on PATH or in /usr/local/go/bin)" >&2; exit 2; }
start=$(date +%s)
tmp=$out.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
version=v1.37.2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
echo "==> tools/kube: building kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd into $out (first time: several minutes)" >&2
cd "$here"
export CGO_ENABLED=0
# One go build for all five: packages compile once and in parallel. etcd's main package is the
# root of go.etcd.io/etcd/server/v3, so go names its binary "server".
go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy go.etcd.io/etcd/server/v3
mv "$tmp/server" "$tmp/etcd"
touch "$tmp/.complete"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
# Older builds (another go.sum) are dead weight: ~400 MB each.
for old in "$cache"/*; do
    case $old in "$out"|*.tmp.*) ;; *) rm -rf "$old" ;; esac
done
echo "==> tools/kube: built in $(( $(date +%s) - start )) s, $(du -sh "$out" | cut -f1) in $out" >&2
echo "$out"
