#!/bin/sh
# Builds cni-libcni offline against Debian's libcni (GOPATH mode, no module downloads):
#   apt-get install golang-go golang-github-containernetworking-cni-dev
#   tests/cni-libcni/build.sh [OUTPUT]        (default: target/cni-libcni)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../target/cni-libcni}
mkdir -p "$(dirname "$out")"
cd "$here"
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOPROXY=off GOCACHE=${GOCACHE:-$here/../../target/go-cache} \
    go build -o "$out" .
echo "$out"
