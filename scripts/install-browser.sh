#!/usr/bin/env bash
# Installs what the console's browser test needs: Debian's chromium and the
# test's npm dependencies (playwright-core only, which drives that chromium).
# Idempotent and quick once done, so CI and developers can call it every run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
test_dir="$root/tools/console-test"

# Only registries are reachable: never let a tool fetch a browser build of
# its own; the test drives Debian's chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export DEBIAN_FRONTEND=noninteractive

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo --preserve-env=DEBIAN_FRONTEND "$@"; fi
}

apt_install() {
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "$@"
}

# playwright-core needs Node.js 20 or later; Debian 12's own nodejs is 18,
# so the machine's Node.js is used rather than installing Debian's.
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null 2>&1; then
    echo "install-browser: Node.js 20 or later with npm is needed (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi

if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: apt-get install chromium"
    apt_install chromium
fi

# node_modules is current when it was installed from this exact lock file:
# the stamp holds the lock's hash.
stamp="$test_dir/node_modules/.package-lock.sha256"
want="$(sha256sum "$test_dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "install-browser: npm ci in tools/console-test"
    (cd "$test_dir" && npm ci --no-audit --no-fund)
    echo "$want" >"$stamp"
fi

echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'), playwright-core $(node -p "require('$test_dir/node_modules/playwright-core/package.json').version")"
