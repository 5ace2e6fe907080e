#!/bin/sh
# Build the base image the Docker tests use, without pulling from any registry: a Debian bookworm root file system made
# with mmdebstrap (Python 3.11 + venv, nothing else) imported with `docker import`, plus a folder of wheels downloaded
# on this host (ipykernel, cryptography) for `jupyter-image-bootstrap build --wheels`. Both are cached by content: the
# image tag and the wheel folder carry a hash of this recipe, so a second run only prints what exists.
#
# Usage: scripts/build-test-image.sh [python|r|scala]   prints two lines: BASE_IMAGE=<tag> and WHEELS=<dir>
#   python (default): Python 3.11 + venv; wheels of ipykernel and cryptography.
#   r:     the same plus Debian's R and IRkernel (r-cran-irkernel); wheels of cryptography.
#   scala: the same plus a Java 17 runtime; wheels of cryptography, pyspark 3.5 (Spark for Scala 2.12) and Apache Toree
#          0.5 with their dependencies (pyspark and toree come as source from PyPI: this host's pip builds their wheels).
# Needs: root, docker engine (scripts/docker-engine.sh), mmdebstrap (apt-get install -y mmdebstrap), network to the
# Debian mirror and to PyPI for the first build only.
set -eu
SUITE=bookworm
# The Debian mirror this machine's apt already uses (its first URI), unless GP_TEST_DEBIAN_MIRROR says otherwise.
apt_mirror() {
    sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1
    sed -n 's/^deb  *\(\[[^]]*\]  *\)\{0,1\}\(http[^ ]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1
}
MIRROR=${GP_TEST_DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}
[ -n "$MIRROR" ] || { echo "build-test-image: no Debian mirror in apt's sources; set GP_TEST_DEBIAN_MIRROR" >&2; exit 1; }
PYVER=3.11                       # bookworm's python3
VARIANT=${1:-python}
SOURCE_PACKAGES=""               # built into wheels on this host (pure Python, no binary on PyPI)
case "$VARIANT" in
    python) INCLUDE=python3-venv; PACKAGES="ipykernel cryptography" ;;
    r) INCLUDE=python3-venv,r-cran-irkernel; PACKAGES="cryptography" ;;
    scala) INCLUDE=python3-venv,openjdk-17-jre-headless,procps
           PACKAGES="cryptography py4j==0.10.9.7 jupyter_client jupyter_core traitlets"
           SOURCE_PACKAGES="pyspark==3.5.7 toree==0.5.0" ;;
    *) echo "build-test-image: variant $VARIANT is not python, r or scala" >&2; exit 2 ;;
esac
CACHE=${GP_TEST_CACHE:-/var/tmp/gp-docker-test}
# The python variant's recipe is unchanged from before variants existed, so its cached image and wheels stay valid.
if [ "$VARIANT" = python ]; then RECIPE="v1 $SUITE $PYVER python3-venv $PACKAGES"
else RECIPE="v1 $SUITE $PYVER $INCLUDE $PACKAGES $SOURCE_PACKAGES"; fi
HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
BASE_IMAGE="gp-test-base:$HASH"
WHEELS="$CACHE/wheels-$HASH"
log() { echo "build-test-image: $*" >&2; }

mkdir -p "$CACHE"
if [ ! -f "$WHEELS/.complete" ]; then
    log "downloading wheels for Python $PYVER into $WHEELS"
    rm -rf "$WHEELS"; mkdir -p "$WHEELS"
    # Binary wheels for the image's Python, fetched by this host's pip (the image has no index and no CA for it).
    env -u PIP_FIND_LINKS python3 -m pip download -q -d "$WHEELS" --only-binary=:all: \
        --python-version "$PYVER" --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_34_x86_64 --platform any $PACKAGES pip
    if [ -n "$SOURCE_PACKAGES" ]; then
        python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
            { log "building the $VARIANT wheels needs this host's python3 to be $PYVER"; exit 1; }
        env -u PIP_FIND_LINKS python3 -m pip wheel -q --no-deps -w "$WHEELS" $SOURCE_PACKAGES
    fi
    touch "$WHEELS/.complete"
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v mmdebstrap >/dev/null || { log "mmdebstrap is not installed (apt-get install -y mmdebstrap)"; exit 1; }
    log "building $BASE_IMAGE ($VARIANT) with mmdebstrap (a minute or more)"
    start=$(date +%s)
    # Hooks inherit this environment: keep the host's pip settings out of the chroot. The root file system goes to a
    # file first, so that a failed mmdebstrap fails here (in a pipe, sh would see only docker import's status). The
    # man1 folder: Java's postinst links its man pages there, and the excluded /usr/share/man would not have it.
    TARBALL="$CACHE/rootfs-$HASH.tar"
    env -u PIP_FIND_LINKS -u PIP_CERT mmdebstrap --quiet --variant=minbase --include="$INCLUDE" \
        --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --setup-hook='mkdir -p "$1"/usr/share/man/man1' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/root/.cache' \
        "$SUITE" "$TARBALL" "$MIRROR" || { rm -f "$TARBALL"; log "mmdebstrap failed ($VARIANT)"; exit 1; }
    docker import -c 'CMD ["python3"]' -c "LABEL gp.test.recipe=$HASH" "$TARBALL" "$BASE_IMAGE" >/dev/null
    rm -f "$TARBALL"
    log "built $BASE_IMAGE in $(( $(date +%s) - start )) s"
fi
echo "BASE_IMAGE=$BASE_IMAGE"
echo "WHEELS=$WHEELS"
