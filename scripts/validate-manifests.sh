#!/usr/bin/env bash
# Validates every Kubernetes manifest in manifests/ against the API schemas of a current
# Kubernetes version with kubernetes-validate (PyPI), strictly: unknown fields are errors.
# It installs kubernetes-validate into a virtualenv of its own first.
#
#   scripts/validate-manifests.sh                 # the newest version the tool knows
#   K8S_VERSION=1.33.0 scripts/validate-manifests.sh
#
# VENV (default target/validate-venv) is where the virtualenv goes; set
# KUBERNETES_VALIDATE_VERSION to pin the tool.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=${VENV:-target/validate-venv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    echo "validate-manifests: installing kubernetes-validate into $venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate${KUBERNETES_VALIDATE_VERSION:+==$KUBERNETES_VALIDATE_VERSION}"
fi

version=${K8S_VERSION:-$("$venv/bin/python" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')}
shopt -s nullglob
manifests=(manifests/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
    echo "validate-manifests: no manifests/*.yaml found" >&2
    exit 1
fi
echo "validate-manifests: Kubernetes $version, ${#manifests[@]} files"
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" "${manifests[@]}"

# The conflist the DaemonSet installs must be JSON with the versions runtimes negotiate.
"$venv/bin/python" - manifests/cni/10-zerotier.conflist <<'PY'
import json, sys
path = sys.argv[1]
conflist = json.load(open(path))
assert conflist["cniVersion"] == "1.0.0", "cniVersion must stay 1.0.0 (libcni 1.1 reads it)"
assert conflist["cniVersions"] == ["1.0.0", "1.1.0"], conflist["cniVersions"]
assert conflist["plugins"][0]["type"] == "zerotier"
print(f"validate-manifests: {path} is a valid conflist")
PY
echo "validate-manifests: all manifests valid"
