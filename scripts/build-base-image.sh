#!/usr/bin/env bash
# Build the local base image for shardkv (default tag shardkv-base:bookworm) from a Debian
# bookworm root filesystem, for Docker engines that cannot pull from a registry.
#
#   scripts/build-base-image.sh [--tag NAME:TAG] [--mirror URL] [--force]
#
# debootstrap (minbase variant: essential packages, apt, nothing else) installs Python 3.11 and
# the CA certificates from the Debian mirror this host's apt already uses, the rootfs is trimmed
# of documentation and package caches, and `docker import` turns it into an image. Bookworm's
# python3 is 3.11, the version shardkv is built and tested with.
#
# Reuse: the image carries a label with the hash of its recipe (this file, the suite, the
# package list and the architecture). When an image of that tag already has the same hash the
# script does nothing, so callers may run it every time; a changed recipe rebuilds. --force
# rebuilds regardless.
#
# Needs root (debootstrap chroots into the new tree) and the debootstrap package; when it is
# missing and apt-get is there, it is installed.
set -euo pipefail

TAG="${SHARDKV_BASE_IMAGE:-shardkv-base:bookworm}"
SUITE="bookworm"
MIRROR="${SHARDKV_DEBIAN_MIRROR:-}"
FORCE=0
# python3 pulls python3.11 and its standard library; ca-certificates for outbound TLS;
# python3 -m venv --without-pip needs nothing more.
PACKAGES="python3,ca-certificates"
RECIPE_LABEL="org.shardkv.base.recipe"

log() { printf '[build-base-image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (docker info failed)"

ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
RECIPE_HASH="$(
  { cat "$0"; printf '%s\n' "$SUITE" "$PACKAGES" "$ARCH"; } | sha256sum | cut -c1-16
)"

if [ "$FORCE" -eq 0 ]; then
  existing="$(docker image inspect --format "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" \
    "$TAG" 2>/dev/null || true)"
  if [ "$existing" = "$RECIPE_HASH" ]; then
    log "reusing $TAG (recipe $RECIPE_HASH)"
    exit 0
  fi
  [ -n "$existing" ] && log "$TAG has recipe $existing, want $RECIPE_HASH: rebuilding"
fi

# The mirror apt uses on this host: the first bookworm (not -security, not -updates) main
# source, from deb822 .sources files or one-line .list files.
detect_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (uri != "" && has_suite) exit; uri=""; has_suite=0; next }
      /^URIs:/   { uri=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) has_suite=1 }
      END { if (uri != "" && has_suite) print uri }
    ' "$f" | head -n1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
}
if [ -z "$MIRROR" ]; then
  MIRROR="$(detect_mirror | head -n1)"
  [ -n "$MIRROR" ] || MIRROR="http://deb.debian.org/debian"
fi

if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get"
  [ "$(id -u)" -eq 0 ] || die "debootstrap is missing: install it (apt-get install debootstrap)"
  log "installing debootstrap"
  apt-get install -y -q debootstrap >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null
  }
fi
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_args=()
if [ -f "$KEYRING" ]; then keyring_args=(--keyring "$KEYRING"); fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/shardkv-rootfs.XXXXXX")"
cleanup() {
  # debootstrap may leave /proc and /sys mounted inside the tree when it fails half way.
  for m in proc sys dev/pts dev; do umount -l "$WORK/root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

log "debootstrap $SUITE ($ARCH, minbase + $PACKAGES) from $MIRROR"
start=$SECONDS
if ! debootstrap --variant=minbase --arch="$ARCH" --components=main \
      --include="$PACKAGES" "${keyring_args[@]}" \
      "$SUITE" "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 30 "$WORK/debootstrap.log" >&2
  [ -f "$WORK/root/debootstrap/debootstrap.log" ] && tail -n 30 "$WORK/root/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi
log "debootstrap done in $((SECONDS - start))s"

# Trim what a server image never reads. apt stays (an image built FROM this one can still
# apt-get install), but its lists and caches go: `apt-get update` brings them back.
root="$WORK/root"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/debootstrap "$root"/tmp/* 2>/dev/null || true
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" > "$root/etc/apt/sources.list"
: > "$root/etc/resolv.conf"   # Docker supplies its own at run time
: > "$root/etc/hostname"

log "importing as $TAG"
tar --numeric-owner -C "$root" -c . | docker import \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV LANG=C.UTF-8" \
  --change "LABEL $RECIPE_LABEL=$RECIPE_HASH" \
  --change "LABEL org.opencontainers.image.title=shardkv-base" \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with Python 3.11\"" \
  --change 'CMD ["/bin/bash"]' \
  - "$TAG" >/dev/null
log "built $TAG ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}')) in $((SECONDS - start))s"
