#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, storage-suite and cluster integration tests.
# Works on a fresh machine of this kind (Rust toolchain present); installs what it lacks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest ..."
  cargo install --locked cargo-nextest
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Build the binaries the process-level tests start before the tests run.
cargo build --workspace --bins --locked
profile=default
if [ "${CI:-}" = true ]; then profile=ci; fi
cargo nextest run --workspace --locked --profile "$profile"
