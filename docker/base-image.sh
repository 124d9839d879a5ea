#!/usr/bin/env bash
# docker/base-image.sh -- make sure the local base image mlops/python:3.11-bookworm exists.
#
# For: developers and CI runners of this pipeline on machines that cannot
# reach Docker Hub (so `FROM python:3.11-slim` cannot be pulled). The
# model-server image is then built with BASE_IMAGE=mlops/python:3.11-bookworm.
#
# What it does (idempotent; if the tag exists it is a quick no-op):
#   - makes sure a Docker engine answers (runs docker/engine.sh if needed),
#   - installs debootstrap (and debian-archive-keyring) via apt if missing,
#   - debootstraps a minbase Debian bookworm (python3 3.11, python3-venv with
#     the ensurepip wheels, ca-certificates, curl) from the Debian mirror in
#     /etc/apt/sources.list{,.d/*.list,.d/*.sources} into a temp dir, with
#     --force-check-gpg: the mirror's Release file must carry a valid signature
#     of the Debian archive keyring, and every .deb must match the sha256 its
#     signed Packages index gives (an unsigned or tampered mirror fails here),
#   - cleans apt lists/caches, `docker import`s it with PATH and CMD set and
#     labels that record its content: mlops.base.release-sha256 (the signed
#     Release the packages were checked against) and mlops.base.packages-sha256
#     (of the installed `package version` list; `docker run --rm TAG dpkg-query
#     -W | sha256sum` recomputes it),
#   - checks `python3 -m venv /opt/venv && /opt/venv/bin/pip --version` works
#     inside, and removes the temp dir.
#
# Why no digest pin: a `name@sha256:` reference names a registry manifest, and
# this image never comes from a registry (RepoDigests is empty). Its image ID
# changes with every import (the config holds the creation time), so no ID can
# be committed either. What pins its content is the signed Debian archive
# (checked above) and the labels; builds refer to it by its local tag.
#
# Output: the last stdout line is the image tag; everything else goes to stderr.
# Overridable via environment: MLOPS_BASE_IMAGE (tag), MLOPS_DEBIAN_MIRROR.
set -euo pipefail

TAG=${MLOPS_BASE_IMAGE:-mlops/python:3.11-bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates,curl
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "base-image.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- a Docker engine to talk to
if ! timeout 15 docker version >/dev/null 2>&1; then
    log "no Docker engine answers at ${DOCKER_HOST:-the default socket}; running engine.sh"
    engine_out=$("$HERE/engine.sh")
    eval "$(tail -n 1 <<<"$engine_out")"
fi

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already exists"
    echo "$TAG"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building $TAG with debootstrap needs root"

# --- the Debian mirror this machine's apt uses (not the security archive)
find_mirror() {
    local f
    # one-line format: deb [options] URI suite components...
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        sed -E 's/^[[:space:]]*//; s/\[[^]]*\]//' "$f" \
            | awk -v s="$SUITE" '$1 == "deb" && $3 == s { print $2; exit }'
    done
    # deb822 format: stanzas with Types:, URIs:, Suites: (and maybe Enabled:)
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        awk -v s="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") \
                    && tolower(enabled) != "no" && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = uris = suites = enabled = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[[:space:]]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "enabled") enabled = val
            }
            END { if (!found) flush() }' "$f"
    done
}

MIRROR=${MLOPS_DEBIAN_MIRROR:-$(find_mirror | awk 'NR == 1')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
log "Debian mirror: $MIRROR"

# --- debootstrap
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if ! command -v debootstrap >/dev/null 2>&1 || [[ ! -r $KEYRING ]]; then
    log "debootstrap or the Debian archive keyring missing: apt-get install them"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends debootstrap \
        debian-archive-keyring >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get -o DPkg::Lock::Timeout=600 update >&2
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends debootstrap \
            debian-archive-keyring >&2
    fi
fi

WORK=$(mktemp -d /var/tmp/mlops-base-image.XXXXXX)
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

log "debootstrap --variant=minbase --include=$PACKAGES $SUITE into $ROOTFS (signatures checked)"
if ! debootstrap --force-check-gpg --keyring="$KEYRING" --variant=minbase \
    --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    log "debootstrap failed; last lines of its log:"
    tail -n 30 "$WORK/debootstrap.log" >&2
    [[ -r "$ROOTFS/debootstrap/debootstrap.log" ]] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    exit 1
fi

# What the image holds, recorded before the apt lists go: the signed Release file
# every package was checked against, and the installed package list.
RELEASES=$(find "$ROOTFS/var/lib/apt/lists" -maxdepth 1 -type f \
    \( -name '*_InRelease' -o -name '*_Release' \) | sort)
[[ -n $RELEASES ]] || die "debootstrap left no Release file to record"
RELEASE_SHA=$(xargs cat <<<"$RELEASES" | sha256sum | cut -d' ' -f1)
PACKAGES_SHA=$(chroot "$ROOTFS" dpkg-query -W | sha256sum | cut -d' ' -f1)

# Slim it down: apt lists and caches are refetched by `apt-get update` in builds.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/apt/* \
    "$ROOTFS"/var/log/dpkg.log "$ROOTFS"/var/log/bootstrap.log
mkdir -p "$ROOTFS"/var/lib/apt/lists/partial

log "docker import -> $TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --change "LABEL mlops.base.suite=$SUITE mlops.base.mirror=$MIRROR mlops.base.gpg-checked=true \
mlops.base.release-sha256=$RELEASE_SHA mlops.base.packages-sha256=$PACKAGES_SHA" \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE $MIRROR" \
    - "$TAG" >&2

# Check the promise this image makes before anything builds on it.
if ! docker run --rm --network none "$TAG" sh -c \
    'python3 --version && python3 -m venv /opt/venv && /opt/venv/bin/pip --version && curl --version | head -n 1' >&2 \
    || [[ $(docker run --rm --network none "$TAG" dpkg-query -W | sha256sum | cut -d' ' -f1) \
          != "$PACKAGES_SHA" ]]; then
    docker rmi "$TAG" >/dev/null 2>&1 || true
    die "smoke test of $TAG failed; image removed"
fi
log "image $TAG ready ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
echo "$TAG"
