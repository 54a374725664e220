#!/usr/bin/env bash
# Debian packages that some tests need, installed when missing:
#   chromium   - the report and the feedback studio are tested in a real headless browser
#   postgresql - sweeps with many workers are tested against a real database server
# Run by `make setup` (so by `make demo`, `make test` and CI). Without root or sudo it only
# says what is missing; the tests that need a missing package are then skipped locally
# (never under CI=true, where they fail).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "system-deps: missing Debian packages: ${need[*]} (install them with apt-get as root;" \
       "the browser / database tests are skipped until then)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: no apt-get here; install ${need[*]} with your package manager" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" fonts-dejavu-core >/dev/null
echo "system-deps: installed ${need[*]}"
