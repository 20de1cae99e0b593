#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, storage-suite and cluster integration tests.
# Works on a fresh machine of this kind (Rust toolchain present); installs what it lacks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A run from a clean clone gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest ..."
  cargo install --locked cargo-nextest
fi

# The OpenAPI conformance test drives the gateway with schemathesis (pinned, from PyPI).
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "installing schemathesis ..."
  # A Python that marks itself externally managed (PEP 668, Debian 12+) refuses a plain
  # install; this machine's tests may install into it.
  python3 -m pip install --quiet 'schemathesis==4.32.5' ||
    python3 -m pip install --quiet --break-system-packages 'schemathesis==4.32.5'
fi

# The web page tests drive Debian's Chromium headless (tests/tests/it/gateway/ui.rs).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium ..."
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

# The Slurm plugin's tests start a single-node Slurm of their own (tests/src/slurm.rs) from
# Debian's packages; installed here so no test spends its time budget on apt.
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  echo "installing slurm-wlm and munge ..."
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurm-wlm munge
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Build the binaries the process-level tests start before the tests run.
cargo build --workspace --bins --locked
# Container images for the docker-compose test (tests/tests/it/deploy): static release binaries
# and FROM scratch images; installs busybox-static if missing.
if [ "${LAUNCHER_SKIP_DOCKER_TESTS:-0}" != 1 ]; then
  bash deploy/build-images.sh
fi
profile=default
if [ "${CI:-}" = true ]; then profile=ci; fi
if [ "${LAUNCHER_SKIP_DOCKER_TESTS:-0}" = 1 ]; then
  # Machines without Docker: the compose tests are left out of the run, never passed unrun.
  cargo nextest run --workspace --locked --profile "$profile" -E 'not test(/^deploy::/)'
else
  cargo nextest run --workspace --locked --profile "$profile"
fi
# The README's local-cluster commands as printed, against a cluster on free ports (debug binaries).
bash tests/readme-test.sh
