#!/usr/bin/env bash
# Install the reference systems the benchmarks compare shardkv against, from Debian's own
# packages: etcd (server + etcdctl), redis (server + redis-cli) and wrk (an HTTP load tool).
#
# Idempotent: a tool already on PATH is skipped, and apt-get runs (with one `apt-get update`)
# only when something is missing. Needs root for apt-get; without root it says what is
# missing and exits 0 so that callers can fall back to skipping the comparison.
#
# Usage: scripts/install-reference-systems.sh [--check]
#   --check   only report what is present and what is missing; exit 1 if something is missing.
set -euo pipefail

# command on PATH -> the Debian package that provides it
declare -A PACKAGE_OF=(
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [wrk]=wrk
)
ORDER=(etcd etcdctl redis-server redis-cli wrk)

missing_packages=()
for tool in "${ORDER[@]}"; do
  if command -v "$tool" >/dev/null 2>&1; then
    echo "present: $tool ($(command -v "$tool"))"
  else
    echo "missing: $tool (Debian package ${PACKAGE_OF[$tool]})"
    missing_packages+=("${PACKAGE_OF[$tool]}")
  fi
done

if [ "${#missing_packages[@]}" -eq 0 ]; then
  echo "reference systems: all present"
  exit 0
fi

if [ "${1:-}" = "--check" ]; then
  exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "not root: cannot apt-get install ${missing_packages[*]}; the benchmarks will skip" \
       "the systems that are missing" >&2
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get on this system: install ${missing_packages[*]} by other means" >&2
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run to release its lock (up to 10 minutes) rather than failing.
APT_OPTS=(-o DPkg::Lock::Timeout=600)
apt-get "${APT_OPTS[@]}" update -qq
# --no-install-recommends: only what the tools need. Debian's packages would also start the
# services through systemd/invoke-rc.d; in a container there is no init, and the benchmark
# starts its own members on free ports in temporary directories anyway.
if ! apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing_packages[@]}"; then
  # An earlier install interrupted half-way leaves unmet dependencies that block every later
  # install; `apt-get -f install` completes it, then we try once more.
  echo "apt-get install failed; repairing the package state with apt-get -f install" >&2
  apt-get "${APT_OPTS[@]}" -f install -y -qq
  apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${missing_packages[@]}"
fi

still_missing=0
for tool in "${ORDER[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "still missing after install: $tool" >&2
    still_missing=1
  fi
done
# The packaged services may have been started by the postinst scripts; the benchmark does not
# use them, and they would hold the default ports. Stop them if an init system is there.
if command -v service >/dev/null 2>&1; then
  service etcd stop >/dev/null 2>&1 || true
  service redis-server stop >/dev/null 2>&1 || true
fi
exit "$still_missing"
