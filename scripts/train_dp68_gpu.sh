#!/usr/bin/env bash
# One chunk of dp68 training on a GPU machine that has only a stock PyTorch install (docs/gan.md,
# "What a GPU session runs"). Trains the run folder RUN (continuing from its checkpoint.pt or
# portable.pt when there) on the shards in SHARDS for MINUTES, and leaves in $OUT what the next
# session needs: portable.pt, log.jsonl, config.json, train.log and the last three sample
# grids (one every 2,000 steps and the last step's). portable.pt and log.jsonl are copied to
# $OUT every 45 s while it trains, so a command killed at its time limit still returns them.
#
#   OUT=/tmp/out scripts/train_dp68_gpu.sh .data/dp68_128 .data/runs/base128 8.5
set -u
shards=$1 run=$2 minutes=$3
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$run" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cv2', cv2.__version__)"

snapshot() {
    for f in portable.pt log.jsonl; do
        if [ -f "$run/$f" ]; then cp "$run/$f" "$OUT/$f.part" && mv "$OUT/$f.part" "$OUT/$f"; fi
    done
}
(while sleep 45; do snapshot; done) &
copier=$!
python3 -m fiftyone_faceanon.gan.train --shards "$shards" --run-dir "$run" --preset base \
    --minutes "$minutes" >"$OUT/train.log" 2>&1
status=$?
kill "$copier"
wait "$copier" 2>/dev/null
snapshot
cp "$run/config.json" "$OUT/"
cp $(ls "$run"/samples/*.png | tail -n 3) "$OUT/"  # at most 8 files come back
tail -n 3 "$OUT/train.log"
ls -l "$OUT"
exit $status
