#!/usr/bin/env bash
# Recipe for the image execbroker/python:local — a minimal Debian bookworm
# root filesystem (mmdebstrap --variant=minbase, no Recommends, no docs/man/
# locales; /usr merged by mmdebstrap's merged-usr hook, which installs
# usr-is-merged instead of usrmerge and so keeps perl out) with python3 and
# what executes Jupyter notebooks non-interactively:
#   python3-ipykernel (the "python3" kernel), python3-nbclient, python3-nbformat,
#   python3-jupyter-client, python3-jupyter-server (interactive sessions) and
#   papermill.
# papermill is not packaged by Debian: its wheel (pure Python, pinned by
# version and sha256) is fetched from PyPI on the host with pip and unpacked
# into /usr/local inside the image by install-wheel.py; its dependencies come
# from Debian packages (listed below).  Nothing is taken from an image registry.
#
# The image is imported as TAG-candidate and tagged TAG only once a notebook has
# run in it.
# Called by scripts/services.sh (`up docker`), which skips the build when an
# image with this tag and IMAGE_VERSION already exists.  Bump IMAGE_VERSION
# whenever this recipe changes so existing machines rebuild it.
# "$1" in the single-quoted mmdebstrap hooks is the hook's own argument:
# shellcheck disable=SC2016
set -euo pipefail

IMAGE_TAG=execbroker/python:local
IMAGE_VERSION=3

SUITE=bookworm
MIRROR=${EXECBROKER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${EXECBROKER_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PACKAGES=(
    python3
    python3-ipykernel python3-jupyter-client python3-nbclient python3-nbformat
    # interactive notebooks: execbroker's runner starts a Jupyter server
    python3-jupyter-server
    # papermill's run-time dependencies (Requires-Dist of papermill 2.7.0 on 3.11)
    python3-click python3-entrypoints python3-requests python3-tenacity
    python3-tqdm python3-yaml
)
PAPERMILL_VERSION=2.7.0
PAPERMILL_WHEEL=papermill-$PAPERMILL_VERSION-py3-none-any.whl
PAPERMILL_SHA256=e1855e6670100a02bb4f8a6870484a5c10b84a8d2e49c49921c90209940c7514

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# --- papermill wheel, from PyPI through the host's pip -----------------------
pip_python=${EXECBROKER_PIP_PYTHON:-python3}
"$pip_python" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp/wheels" "papermill==$PAPERMILL_VERSION"
echo "$PAPERMILL_SHA256  $tmp/wheels/$PAPERMILL_WHEEL" | sha256sum -c -
cp "$here/install-wheel.py" "$tmp/install-wheel.py"

# --- a stand-in for gdb -------------------------------------------------------
# python3-ipykernel -> python3-debugpy -> python3-pydevd Depends on gdb, which
# with its libraries (libicu, boost, glib, ...) is ~65 MB and is used only to
# attach a debugger to a running process.  A local empty package that
# "Provides: gdb" satisfies that dependency (the equivs technique).
mkdir -p "$tmp/nogdb/DEBIAN"
cat > "$tmp/nogdb/DEBIAN/control" <<CONTROL
Package: execbroker-no-gdb
Version: 1.0
Architecture: all
Maintainer: execbroker <execbroker@localhost>
Provides: gdb
Description: stand-in for gdb in the execbroker/python:local image
 Satisfies python3-pydevd's dependency on gdb; debugpy's attach-to-process
 does not work in this image.
CONTROL
dpkg-deb --root-owner-group --build "$tmp/nogdb" "$tmp/execbroker-no-gdb_1.0_all.deb" >/dev/null

# --- root filesystem ----------------------------------------------------------
include=$(IFS=,; echo "${PACKAGES[*]},$tmp/execbroker-no-gdb_1.0_all.deb")
mmdebstrap \
    --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --mode=root \
    --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --include="$include" \
    --setup-hook="mkdir -p \"\$1$tmp\"" \
    --setup-hook="copy-in $tmp/execbroker-no-gdb_1.0_all.deb $tmp" \
    --customize-hook="upload $tmp/wheels/$PAPERMILL_WHEEL /tmp/$PAPERMILL_WHEEL" \
    --customize-hook="upload $tmp/install-wheel.py /tmp/install-wheel.py" \
    --customize-hook="chroot \"\$1\" python3 /tmp/install-wheel.py /tmp/$PAPERMILL_WHEEL" \
    --customize-hook="rm -rf \"\$1\"/tmp/*.whl \"\$1\"/tmp/install-wheel.py \"\$1$tmp\"" \
    --customize-hook='chroot "$1" python3 -c "import ipykernel, jupyter_server, nbclient, nbformat, papermill"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log' \
    "$SUITE" "$tmp/rootfs.tar" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main"

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'WORKDIR /' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.execbroker.recipe-version=$IMAGE_VERSION" \
    --change "LABEL org.execbroker.papermill-version=$PAPERMILL_VERSION" \
    --change 'LABEL org.opencontainers.image.title="execbroker/python:local (Debian bookworm minbase + Jupyter)"' \
    --message "built by scripts/images/python/build.sh version $IMAGE_VERSION" \
    "$tmp/rootfs.tar" "$IMAGE_TAG-candidate"

# --- smoke test: execute a notebook with nbclient and with papermill ----------
docker run --rm "$IMAGE_TAG-candidate" sh -ec '
cd /tmp
cat > make_nb.py <<PY
import nbformat
from nbclient import NotebookClient
nb = nbformat.v4.new_notebook()
nb.cells = [
    nbformat.v4.new_code_cell("x = 6", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell("print(x * 7)"),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbformat.write(nb, "in.ipynb")
NotebookClient(nb, timeout=60, kernel_name="python3").execute()
assert nb.cells[-1].outputs[0]["text"].strip() == "42", nb.cells[-1].outputs
print("nbclient ok")
PY
python3 make_nb.py
papermill --log-level WARNING in.ipynb out.ipynb -p x 2
python3 -c "import nbformat; nb = nbformat.read(\"out.ipynb\", 4); out = nb.cells[-1].outputs[0][\"text\"].strip(); assert out == \"14\", out; print(\"papermill ok\")"
'
docker tag "$IMAGE_TAG-candidate" "$IMAGE_TAG"
docker rmi "$IMAGE_TAG-candidate" >/dev/null
echo "$IMAGE_TAG: smoke test passed"
