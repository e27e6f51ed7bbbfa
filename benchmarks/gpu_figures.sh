#!/usr/bin/env bash
# The GPU figures docs/performance.md still lacks (issue 53), in one call on a machine with one
# GPU, jax with CUDA, torch with CUDA and torchattacks 3.5.1
# (`pip install --no-deps torchattacks==3.5.1`):
#
#   1. the ResNet-18 PGD-10 AT step against PyTorch's (bfloat16 under autocast), batch 512 and
#      1024: benchmarks/train_step.py --torch;
#   2. AutoAttack (standard, L-inf 8/255) on CIFAR-shaped points with ResNet-18, jaxadv against
#      torchattacks on the same weights and points, stage by stage, first calls (compilation
#      included): benchmarks/attack_speed.py --per-stage.
#
# Each part runs under its own time limit and writes its output to $OUT/<part>.txt as it goes,
# so a part cut short still leaves the stages it finished. Sizes (environment):
#   AA_POINTS (10000)   points attacked by both libraries
#   AA_BATCH (2500)     points per attack call
#   TRAIN_STEPS (300)   PGD-AT steps that give the attacked model robust and non-robust points
#   PART_LIMIT_S (420)  seconds per part
# SMOKE=1 checks the script on a CPU in a few minutes: SmallCNN instead of ResNet-18, tiny
# sizes, PyTorch on the CPU.
#
# Usage (from the repository root):
#   OUT=/tmp/gpu bash benchmarks/gpu_figures.sh
#   SMOKE=1 OUT=/tmp/gpu_smoke bash benchmarks/gpu_figures.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_figures}
mkdir -p "$OUT"
if [[ "${SMOKE:-0}" == 1 ]]; then
  MODEL=small_cnn; DEVICE=cpu; BATCHES="16"
  AA_POINTS=${AA_POINTS:-16}; AA_BATCH=${AA_BATCH:-16}
  TRAIN_STEPS=${TRAIN_STEPS:-2}; PART_LIMIT_S=${PART_LIMIT_S:-300}; REPEATS=1; AA_STEPS=2
else
  MODEL=resnet18; DEVICE=cuda; BATCHES="512 1024"
  AA_POINTS=${AA_POINTS:-10000}; AA_BATCH=${AA_BATCH:-2500}
  TRAIN_STEPS=${TRAIN_STEPS:-300}; PART_LIMIT_S=${PART_LIMIT_S:-420}; REPEATS=5; AA_STEPS=100
fi

run_part() {  # name, command...: runs the command under the time limit, output to $OUT/name.txt
  local name=$1; shift
  echo "== $name: $*" | tee "$OUT/$name.txt"
  timeout "$PART_LIMIT_S" "$@" 2>&1 | tee -a "$OUT/$name.txt"
  local status=${PIPESTATUS[0]}
  echo "== $name: exit $status" | tee -a "$OUT/$name.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  python -c "import jax, torch; print('jax', jax.__version__, jax.devices()); \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/machine.txt"

for batch in $BATCHES; do
  run_part "train_step_${MODEL}_bf16_b$batch" python benchmarks/train_step.py --model "$MODEL" \
      --batch "$batch" --dtype bfloat16 --torch --torch-device "$DEVICE" --repeats "$REPEATS"
done
run_part "autoattack_${MODEL}_${AA_POINTS}" python benchmarks/attack_speed.py --model "$MODEL" \
    --data synthetic-cifar --device "$DEVICE" --num-examples "$AA_POINTS" \
    --batch-size "$AA_BATCH" --train-steps "$TRAIN_STEPS" --attacks autoattack-fn --per-stage \
    --repeats 0 --torch-aa-steps "$AA_STEPS"
