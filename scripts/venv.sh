# Sourced by run.sh and run_tests.sh: make .venv with the project installed, once per change.
# Honours PYTHON (the interpreter to build .venv from; default python3.11, else python3).
set -euo pipefail
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$_root/.venv/bin/python" ]; then
  if ! "$_python" -m venv "$_root/.venv" 2>/dev/null; then
    # Debian ships venv separately; install it when we may.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$_root/.venv"
      "$_python" -m venv "$_root/.venv"
    else
      echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
_extras=${NEBULA_VENV_EXTRAS:-}
_stamp="$_root/.venv/.nebula-installed${_extras:+-$_extras}"
if [ ! -f "$_stamp" ] || [ "$_root/setup.cfg" -nt "$_stamp" ]; then
  "$_root/.venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
  "$_root/.venv/bin/python" -m pip install -q -e "$_root${_extras:+[$_extras]}"
  touch "$_stamp"
fi
