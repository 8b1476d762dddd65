#!/usr/bin/env bash
# Install the headless browser the dashboard's tests drive (tests/browser/): Debian's
# chromium and chromium-driver packages. Selenium (a PyPI test extra) talks to the packaged
# chromedriver; no browser is ever downloaded.
#
# Idempotent: when both are on PATH nothing runs. Needs root for apt-get; without root it
# says what is missing and exits 0 (the browser tests then skip, and CI, which runs as root,
# would fail on that skip: it is not in tests/allowed_skips.txt).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "browser: chromium and chromedriver present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "cannot apt-get install chromium chromium-driver (not root, or no apt-get);" \
       "the browser tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600)
apt-get "${APT_OPTS[@]}" update -qq
if ! apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends chromium chromium-driver; then
  echo "apt-get install failed; repairing the package state with apt-get -f install" >&2
  apt-get "${APT_OPTS[@]}" -f install -y -qq
  apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends chromium chromium-driver
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null
