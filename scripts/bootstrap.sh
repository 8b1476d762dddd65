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
  echo "installing shardkv ($shardkv_mode) into .venv (pip's output: .venv/pip-install.log) ..." >&2
  # pip's and setuptools' chatter (the editable-install warning among it) goes to the log;
  # on a failure the log's end is shown, so the reason is never hidden.
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -e "$shardkv_spec"; } >.venv/pip-install.log 2>&1; then
    tail -n 40 .venv/pip-install.log >&2
    echo "bootstrap: installing shardkv failed; the whole log is .venv/pip-install.log" >&2
    return 1 2>/dev/null || exit 1
  fi
  touch "$stamp"
  # The test install includes the runtime: a later scripts/up need not install again.
  if [ "$shardkv_mode" = test ]; then touch .venv/.shardkv-installed-runtime; fi
fi
