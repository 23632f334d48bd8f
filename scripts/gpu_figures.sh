#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md §3 in one run (about 8 minutes on one H200):
#   OUT=runs/gpu bash scripts/gpu_figures.sh
# 1. bench: CLIP4Clip-96 vs ECLIPSE-32 at the base preset, bf16, inference and training
# 2. the paper's recipe (batch 64, bf16, gradient checkpointing): peak memory, largest batch
# 3. torchrun (DDP on NCCL) of `eclipse-lite train --preset base` on the ci benchmark with a
#    random ViT-B/32 CLIP and audio embedded on the GPU from compact batches
# 4. `eclipse-lite demo --preset tiny` with fine-tuning on the GPU (benchmark and towers made
#    on CPU cores 4-15 while 1-2 run on cores 0-3)
# BUDGET (default 540 s) bounds the whole run. Logs go to $OUT/logs.txt; each step has its own time limit, so one failure leaves the rest.
set -uo pipefail
OUT=${OUT:-runs/gpu}
W=${WORK:-/tmp/eclipse-gpu}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 CI=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
LOG="$OUT/logs.txt"
step() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }

step environment
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  echo "cpus $(nproc)"; } >> "$LOG" 2>&1

step "background: tiny benchmark + pretrained towers on cores 4-15"
( taskset -c 4-15 $PY -m eclipse_lite.cli make-data --preset tiny --workers 12 --out "$W/tiny" \
  && taskset -c 4-15 $PY -m eclipse_lite.cli pretrain --preset tiny --data "$W/tiny" ) > "$W/towers.log" 2>&1 &
BG=$!

step "1. bench (base preset, batch 8, bf16)"
taskset -c 0-3 timeout 200 $PY -m eclipse_lite.cli bench --preset base --device cuda --batch 8 --steps 10 \
  --warmup 3 --repeats 3 --what flops,memory --out "$OUT/bench" >> "$LOG" 2>&1
echo "rc=$?" >> "$LOG"

step "2. paper recipe step (batch 64) and the largest batch"
taskset -c 0-3 timeout 120 $PY scripts/gpu_paper_step.py --out "$OUT/paper_step.json" --batches 64 \
  --largest >> "$LOG" 2>&1
echo "rc=$?" >> "$LOG"

step "3. torchrun --nproc_per_node 1 train --preset base (NCCL, bf16, compact batches)"
taskset -c 0-3 $PY scripts/gpu_fixtures.py "$W/fx" >> "$LOG" 2>&1
taskset -c 0-3 $PY -m eclipse_lite.cli make-data --preset ci --out "$W/ci" >> "$LOG" 2>&1
t0=$SECONDS
timeout 120 torchrun --nproc_per_node 1 -m eclipse_lite.cli train --preset base \
  --clip "$W/fx/clip-vit-b32-random" --vggsound "$W/fx/vggsound-random.pth" --data "$W/ci" \
  --device cuda --set epochs=2 --set batch_size=4 --out "$W/torchrun" >> "$LOG" 2>&1
echo "rc=$? wall=$((SECONDS - t0)) s" >> "$LOG"
cp "$W/torchrun/results.json" "$OUT/torchrun_results.json" 2>> "$LOG"

step "4. tiny demo, fine-tuning on the GPU"
wait $BG; echo "towers rc=$?" >> "$LOG"; tail -5 "$W/towers.log" >> "$LOG"
t0=$SECONDS
timeout "$(( ${BUDGET:-540} - SECONDS ))" $PY -m eclipse_lite.cli demo --preset tiny --device cuda --data "$W/tiny" \
  --out "$W/demo" >> "$LOG" 2>&1
echo "rc=$? wall=$((SECONDS - t0)) s" >> "$LOG"
cp "$W/demo/results.json" "$OUT/demo_results.json" 2>> "$LOG"
step done
