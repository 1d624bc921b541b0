#!/usr/bin/env bash
# Install (scripts/setup.sh) and run every test, the notebooks included (nbmake).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k telegram`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export CLONEKIT_HOME="${CLONEKIT_HOME:-$PWD/.clonekit}"   # model cache shared by tests and notebooks
export CLONEKIT_SMALL=1                                    # notebooks pick tiny CPU settings
.venv/bin/python -m pytest -q --durations=20 --doctest-modules --nbmake --nbmake-timeout=1500 tests clonekit notebooks "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi
exit $rc
