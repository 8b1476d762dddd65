# Sourced by scripts/up and scripts/test: make .venv with shardkv installed (editable).
#   source scripts/bootstrap.sh runtime   # the runtime only (`pip install -e .`): scripts/up
#   source scripts/bootstrap.sh test      # plus the test extras (pytest, ruff, chart tools)
# Without a mode (or with something else, such as a caller's own arguments, which `source`
# passes on) it installs the test extras, as before. Re-running is cheap: pip is skipped when
# pyproject.toml has not changed since that mode was installed.
set -euo pipefail
case "${1:-}" in
  runtime) shardkv_mode=runtime; shardkv_spec='.' ;;
  *) shardkv_mode=test; shardkv_spec='.[test]' ;;
esac
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.shardkv-installed-$shardkv_mode"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "installing shardkv ($shardkv_mode) into .venv ..." >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$shardkv_spec"
  touch "$stamp"
  # The test install includes the runtime: a later scripts/up need not install again.
  if [ "$shardkv_mode" = test ]; then touch .venv/.shardkv-installed-runtime; fi
fi
