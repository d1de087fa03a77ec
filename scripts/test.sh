#!/usr/bin/env bash
# Runs every test of the workspace, installing first what the tests need when it is missing:
# OpenSSH's sshd and client tools (SSH tests start their own sshd on 127.0.0.1), what libssh2
# builds against,
# Chromium (the dashboard is checked in a real browser) and xmllint (JUnit schema checks).
#
#   scripts/test.sh               all tests
#   scripts/test.sh -p qa-core    arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need+=(zlib1g-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v setsid >/dev/null 2>&1 || need+=(util-linux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
command -v git >/dev/null 2>&1 || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The AWS tests talk to moto's server on a loopback port.
if ! python3 -c "import moto.server" >/dev/null 2>&1; then
    echo "installing moto[server]"
    python3 -m pip install --quiet "moto[server]"
fi

# With the tools installed, their tests must run rather than skip.
export QA_REQUIRE_SSHD=1
export QA_REQUIRE_CHROMIUM=1
export QA_REQUIRE_XMLLINT=1

if [ $# -gt 0 ]; then
    exec cargo test "$@"
fi
# The hygiene gate, before any test: formatting, lints (every target, benchmarks included:
# they are measured with `cargo bench`, not run here, but must build) and the docs.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --all-features --quiet
# --all-features: the cloud backends (behind cargo features) are tested too.
exec cargo test --workspace --all-features --no-fail-fast
