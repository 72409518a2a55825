#!/usr/bin/env bash
# The full test gate: formatting, lints with warnings as errors, and every test, including the
# ones that start a real Mosquitto broker.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
