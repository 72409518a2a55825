#!/usr/bin/env bash
# The full test gate: formatting, lints and docs with warnings as errors, and every test,
# including the ones that start a real Mosquitto broker.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --locked
