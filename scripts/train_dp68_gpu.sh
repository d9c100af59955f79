#!/usr/bin/env bash
# One chunk of dp68 training on a GPU machine that has only a stock PyTorch install (docs/gan.md,
# "What a GPU session must run next"). With LAYOUT "auto" (the default) it first times a training
# step in both memory layouts (benchmarks/bench_gan_train.py, about 40 s; table in bench.md) and
# trains in the faster one. Trains the run folder RUN (continuing from its checkpoint.pt or
# portable.pt when there, else from the state the last session kept in
# models/training/dp68_<S>_state.pt, checksum checked, when there) on the shards in SHARDS for
# MINUTES, and leaves in $OUT what the next session needs: portable.pt, log.jsonl, config.json,
# train.log, bench.md and the last three sample grids (one every 2,000 steps and the last
# step's): 8 files, as many as come back.
# portable.pt and log.jsonl are copied to $OUT every 45 s while it trains, so a command killed
# at its time limit still returns them.
#
#   OUT=/tmp/out scripts/train_dp68_gpu.sh .data/dp68_128 .data/runs/base128 8 [LAYOUT]
#
# PRESET (default base) sets the preset of a fresh run and of the benchmark, e.g. tiny to try
# the script on a CPU.
set -u
shards=$1 run=$2 minutes=$3 layout=${4:-auto} preset=${PRESET:-base}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$run" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cv2', cv2.__version__)"

if [ "$layout" = auto ]; then
    python3 benchmarks/bench_gan_train.py --shards "$shards" --preset "$preset" \
        >"$OUT/bench.md" 2>&1
    cat "$OUT/bench.md"
    layout=$(sed -n 's/^best: //p' "$OUT/bench.md")
fi
flags=()
if [ "$layout" = channels_last ]; then flags=(--channels-last); fi
echo "layout: ${layout:-contiguous (the benchmark failed)}"
if [ ! -f "$run/checkpoint.pt" ] && [ ! -f "$run/portable.pt" ]; then
    kept=$(python3 -c "from fiftyone_faceanon.gan.train import KEPT_STATE, PRESETS
print(KEPT_STATE.format(resolution=PRESETS['$preset'].net.resolution))")
    if [ -f "models/$kept" ]; then
        start=$(python3 -c "from fiftyone_faceanon.weights import model_path
print(model_path('$kept'))") || exit 1
        flags+=(--start-from "$start")
        echo "starting from models/$kept"
    fi
fi

snapshot() {
    for f in portable.pt log.jsonl; do
        if [ -f "$run/$f" ]; then cp "$run/$f" "$OUT/$f.part" && mv "$OUT/$f.part" "$OUT/$f"; fi
    done
}
(while sleep 45; do snapshot; done) &
copier=$!
python3 -m fiftyone_faceanon.gan.train --shards "$shards" --run-dir "$run" --preset "$preset" \
    --minutes "$minutes" "${flags[@]}" >"$OUT/train.log" 2>&1
status=$?
kill "$copier"
wait "$copier" 2>/dev/null
snapshot
cp "$run/config.json" "$OUT/"
cp $(ls "$run"/samples/*.png | tail -n 3) "$OUT/"  # at most 8 files come back
tail -n 3 "$OUT/train.log"
ls -l "$OUT"
exit $status
