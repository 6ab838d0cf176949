#!/usr/bin/env bash
# The main job until the HTTP services land: a demonstration of the embedded default store
# (RocksDB under ./data), writing and reading through the engine's public API.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
cargo run --release -p engine --example demo -- data/demo-rocksdb
