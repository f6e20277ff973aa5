#!/bin/sh
# Make ./.venv with clusterdns installed (with its test tools when given "test").
# Debian's python3 needs python3-venv for this; as root it is installed when missing.
set -eu
cd "$(dirname "$0")/.."
if ! python3 -c "import ensurepip, venv" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "python3 -m venv is missing: install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
extra=""
[ "${1:-}" = test ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra"
# The package's bytecode, now: pip compiles it for a regular install but not for an editable one, and
# where PYTHONDONTWRITEBYTECODE is set every start would compile it again (0.2 s of a server's start).
.venv/bin/python -m compileall -q clusterdns
