#!/usr/bin/env bash
# The real-data run of issue 7 on a GPU machine: Kvasir-SEG as shipped -> ingest (the official
# MediaEval Medico 2020 880/120 split; val carved from the 880 by group) -> clean -> augment x25
# at 352 -> UNet++ and ResUNet++ trained side by side on the one GPU -> test on the 120.
# In phases, so that a device lease (a few short commands) can be spent well:
#
#   benchmarks/kvasir_gpu.sh prep  KVASIR_DIR WORK            # ~1 min on 16 cores
#   benchmarks/kvasir_gpu.sh speed WORK                       # benchmarks/train_speed.py on WORK's shards
#   benchmarks/kvasir_gpu.sh train WORK EPOCHS MINUTES MODEL...   # one background run per model
#   benchmarks/kvasir_gpu.sh wait  WORK                       # until every run has its summary.json
#
# Runs go to WORK/runs/<model>; their logs to WORK/logs/. Figures: benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: $0 prep|speed|train|wait ...}
shift

case $phase in
prep)
    src=${1:?KVASIR_DIR}; work=${2:?WORK}
    python3 -m segprep ingest "$src" -o "$work" --splits manifests/kvasir-seg_medico2020.csv
    python3 -m segprep clean "$work/manifests/ingest.csv"
    python3 -m segprep augment "$work/manifests/clean.csv" --factor 25 --size 352
    ;;
speed)
    work=${1:?WORK}
    python3 benchmarks/train_speed.py --manifest "$work/manifests/augment.csv" --n 640 --models unet unetpp
    ;;
train)
    work=${1:?WORK}; epochs=${2:?EPOCHS}; minutes=${3:?MINUTES}; shift 3
    mkdir -p "$work/logs"
    for model in "$@"; do
        # setsid: the run outlives the shell that started it (a device command returns at once)
        setsid nohup python3 -m segtrain run "$work/manifests/augment.csv" --model "$model" --loss bce+dice \
            --epochs "$epochs" --max-minutes "$minutes" --batch-size 16 --lr 1e-3 --optimizer adamw \
            --scheduler cosine --amp bf16 --channels-last --workers 6 --seed 0 -o "$work/runs/$model" \
            > "$work/logs/$model.log" 2>&1 < /dev/null &
        echo "started $model (pid $!), log $work/logs/$model.log"
    done
    ;;
wait)
    work=${1:?WORK}
    while pgrep -f "segtrain run" > /dev/null; do sleep 10; done
    for log in "$work"/logs/*.log; do echo "== $log"; tail -n 4 "$log"; done
    ;;
*)
    echo "unknown phase '$phase'; valid: prep, speed, train, wait" >&2
    exit 2
    ;;
esac
