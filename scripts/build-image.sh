#!/usr/bin/env bash
# Build the shardkv container image (default tag shardkv:dev) without pulling from a registry.
#
#   scripts/build-image.sh [--tag NAME:TAG] [--base IMAGE] [--force]
#
# 1. The base: by default the local Debian bookworm image of scripts/build-base-image.sh
#    (built once, then reused). `--base python:3.11-slim` uses a registry image instead, on an
#    engine that can pull it.
# 2. The wheels, on the host, into build/wheels/ (the only part of the repository the build
#    context sends, see .dockerignore): shardkv and every pure-Python dependency are built with
#    `pip wheel` (some, such as pysyncobj, exist only as source), then the compiled
#    dependencies are downloaded for the image's platform (linux, CPython 3.11, glibc 2.36) so
#    that the host's own Python version does not matter. pip itself comes along as a wheel:
#    the image runs pip from that wheel file and never installs it.
# 3. `docker build`, which installs from build/wheels with --no-index: no network inside.
#
# Reuse: the image carries a label with the hash of what went into it (sources, pyproject,
# Dockerfile, this script, the base image's id). When an image of that tag already has the
# same hash the script does nothing, so tests may call it every time. --force rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${SHARDKV_IMAGE:-shardkv:dev}"
BASE="${SHARDKV_BASE_IMAGE:-shardkv-base:bookworm}"
FORCE=0
SOURCE_LABEL="org.shardkv.source-hash"
PYTHON_VERSION="3.11"
GLIBC_MINOR=36   # glibc 2.36: Debian bookworm, the base of shardkv-base and python:3.11-slim

log() { printf '[build-image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (docker info failed)"
start=$SECONDS

# --- 1. base image ----------------------------------------------------------------------
if [[ "$BASE" == shardkv-base:* ]]; then
  base_args=(--tag "$BASE")
  [ "$FORCE" -eq 1 ] && base_args+=(--force)
  scripts/build-base-image.sh "${base_args[@]}"
elif ! docker image inspect "$BASE" >/dev/null 2>&1; then
  log "base $BASE is not present locally: docker will try to pull it"
fi
base_id="$(docker image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || echo "$BASE")"

# --- reuse check --------------------------------------------------------------------------
source_hash="$(
  {
    printf '%s\n' "$base_id"
    find node coordinator client cluster chaos backup -type f -not -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum pyproject.toml README.md Dockerfile .dockerignore "$0"
  } | sha256sum | cut -c1-16
)"
if [ "$FORCE" -eq 0 ]; then
  existing="$(docker image inspect --format "{{ index .Config.Labels \"$SOURCE_LABEL\" }}" \
    "$TAG" 2>/dev/null || true)"
  if [ "$existing" = "$source_hash" ]; then
    log "reusing $TAG (sources $source_hash)"
    exit 0
  fi
  [ -n "$existing" ] && log "$TAG was built from sources $existing, now $source_hash: rebuilding"
fi

# --- 2. wheels ----------------------------------------------------------------------------
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip"
machine="$(uname -m)"
case "$machine" in
  x86_64|aarch64) ;;
  *) die "unsupported architecture $machine" ;;
esac

wheels=build/wheels
host_wheels=build/wheels-host
rm -rf "$wheels" "$host_wheels"
mkdir -p "$wheels" "$host_wheels"

log "pip wheel: shardkv and its dependencies, with $("$PY" --version 2>&1)"
# setuptools builds in build/lib and never deletes from it: a module removed from the sources
# would still ship. Start from an empty build/lib, and leave none behind.
rm -rf build/lib build/bdist.*
"$PY" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$host_wheels" . \
  || die "pip wheel failed"
rm -rf build/lib build/bdist.*
# Pure-Python wheels run anywhere; compiled ones built for the host's Python may not.
cp "$host_wheels"/*-none-any.whl "$wheels"/
shardkv_wheel="$(ls "$wheels"/shardkv-*.whl)"
# Every package of the source tree must be in the wheel: [tool.setuptools] lists packages
# one by one, and a subpackage missing there works in the editable install but not here.
"$PY" - "$shardkv_wheel" <<'PYTHON' || die "the shardkv wheel is missing packages (see above)"
import pathlib, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = [
    "shardkv." + ".".join(init.parent.parts)
    for part in ("node", "coordinator", "client", "cluster", "chaos", "backup")
    for init in sorted(pathlib.Path(part).rglob("__init__.py"))
    if "_root" not in init.parts
    and "shardkv/" + init.parent.as_posix() + "/__init__.py" not in names
]
for package in missing:
    print(f"  {package} is not in the wheel: add it to packages in pyproject.toml", file=sys.stderr)
sys.exit(1 if missing else 0)
PYTHON

log "pip download: compiled dependencies for linux $machine, CPython $PYTHON_VERSION"
# pip does not widen an explicit --platform: name every manylinux tag glibc 2.36 can run.
platform_args=()
for minor in $(seq "$GLIBC_MINOR" -1 17); do
  platform_args+=(--platform "manylinux_2_${minor}_${machine}")
done
platform_args+=(--platform "manylinux2014_${machine}")
[ "$machine" = x86_64 ] && platform_args+=(--platform manylinux2010_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download --quiet --disable-pip-version-check \
  --only-binary=:all: "${platform_args[@]}" \
  --python-version "$PYTHON_VERSION" --implementation cp \
  --abi "cp${PYTHON_VERSION/./}" --abi abi3 --abi none \
  --find-links "$wheels" --dest "$wheels" \
  "$shardkv_wheel" pip \
  || die "pip download failed"
rm -rf "$host_wheels"
log "$(find "$wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$wheels" | cut -f1) in $wheels"

# --- 3. image -----------------------------------------------------------------------------
version="$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
log "docker build $TAG (base $BASE)"
DOCKER_BUILDKIT=0 docker build --force-rm \
  --build-arg "BASE_IMAGE=$BASE" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  --label "$SOURCE_LABEL=$source_hash" \
  --tag "$TAG" . >&2 \
  || die "docker build failed"
# The legacy builder leaves the install stage (and any image this tag replaced) untagged.
for label in "$SOURCE_LABEL" org.shardkv.build-stage; do
  docker image prune --force --filter "label=$label" --filter dangling=true >/dev/null 2>&1 || true
done
size="$(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}')"
log "built $TAG ($size) in $((SECONDS - start))s"
