#!/usr/bin/env bash
# The whole check: ruff, mypy (strict on gateway/), import-linter, then pytest (unit + real-mosquitto
# integration tests). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The benchmark's smoke run is part of the suite, so its dependency group (the AWS SDK peer,
# plots) too: development tools, dependency groups of pyproject.toml (scripts/bootstrap.sh).
"$root/scripts/bootstrap.sh" test,bench,devcloud
cd "$root"
bin="$root/.venv/bin"
echo "==> ruff"
"$bin/ruff" check gateway tests bench
"$bin/ruff" format --check gateway tests bench
echo "==> mypy (strict)"
"$bin/mypy" gateway
echo "==> import-linter (the layers in pyproject.toml)"
"$bin/lint-imports"
echo "==> pytest"
exec "$bin/pytest" "$@"
