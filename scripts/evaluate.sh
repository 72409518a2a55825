#!/usr/bin/env bash
# Builds a labelled scenario from each real data set, replays it through the daemon's pipeline
# and scores the alerts. Usage:
#
#   scripts/evaluate.sh DATA_DIR OUT_DIR [SEED]
#
# DATA_DIR contains one folder per data set: eemeter-uk (bundled in datasets/ as well),
# lcl-london-daily (Low Carbon London, UK Power Networks), tsrepr-30min (TSrepr R package) and
# umass-microgrid-1min (UMass Smart* microgrid). A missing folder is reported and skipped.
# Each data set's scenario, alerts and score go to OUT_DIR/<data set>/.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DATA_DIR OUT_DIR [SEED]" >&2
    exit 2
fi
data_dir=$1
out_dir=$2
seed=${3:-1}
repo_root=$(cd "$(dirname "$0")/.." && pwd)

cargo build --release --locked -p gridwatch --manifest-path "$repo_root/Cargo.toml"
gridwatch="$repo_root/target/release/gridwatch"

# data set name for --dataset, and its folder under DATA_DIR
sets=(
    "eemeter-uk eemeter-uk"
    "lcl-london-daily lcl-london-daily"
    "tsrepr-30min tsrepr-30min"
    "umass umass-microgrid-1min"
)
for entry in "${sets[@]}"; do
    read -r name folder <<<"$entry"
    if [[ ! -d "$data_dir/$folder" ]]; then
        echo "skipping $name: $data_dir/$folder does not exist" >&2
        continue
    fi
    out="$out_dir/$name"
    echo "== $name" >&2
    "$gridwatch" scenario --dataset "$name" --data-dir "$data_dir/$folder" --out "$out" --seed "$seed"
    # Daily readings are 1,440-minute intervals; the default max_interval_minutes (180) would
    # record each one as a gap and leave the window statistics empty.
    config=()
    if [[ $name == lcl-london-daily ]]; then
        printf '[state]\nmax_interval_minutes = 1500\n' >"$out/config.toml"
        config=(--config "$out/config.toml")
    fi
    RUST_LOG=warn "$gridwatch" replay --input "$out/messages.jsonl" --alerts "$out/alerts.jsonl" \
        --rules "$repo_root/rules" --quiet "${config[@]}"
    "$gridwatch" score --labels "$out/labels.jsonl" --alerts "$out/alerts.jsonl" | tee "$out/score.md"
    "$gridwatch" score --labels "$out/labels.jsonl" --alerts "$out/alerts.jsonl" --json > "$out/score.json"
done
