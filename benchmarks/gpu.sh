#!/usr/bin/env bash
# Every GPU row of the training benchmark in one run: ResNet-50 against plain Flax, torch eager
# and torch.compile; AlexNet, VGG-16 and GoogLeNet against torch eager and torch.compile. All
# bfloat16 compute, batch 256, synthetic 224x224 data already on the device, each peer in its
# own process (benchmarks/train_throughput.py); then ResNet-50 from JPEG files against the
# same step on device-resident data (benchmarks/input_bound.py). About 8 minutes for the
# first part on one H100/H200; the second is not measured yet.
#
#   bash benchmarks/gpu.sh                      # appends to benchmarks/results/train_throughput_gpu.jsonl
#   OUT_FILE=/tmp/rows.jsonl bash benchmarks/gpu.sh
#   SMALL=1 bash benchmarks/gpu.sh              # the same script on the CPU, tiny shapes (CI)
#
# torch.compile gets a time limit per model (TorchInductor can take minutes on the larger
# graphs); a worker past it is killed and its row says "timed out after N s". Once BUDGET_S
# seconds have passed, the models not yet started are skipped and said so.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_FILE=${OUT_FILE:-benchmarks/results/train_throughput_gpu.jsonl}
BUDGET_S=${BUDGET_S:-480}
if [[ "${SMALL:-0}" == 1 ]]; then
  common=(--device cpu --dtype float32 --batch 2 --image-size 64 --steps 1 --warmup 1 --repeats 1)
  declare -A compile_timeout=([resnet50]=1 [alexnet]=1 [vgg16]=1 [googlenet]=1)
else
  common=(--device gpu --dtype bfloat16 --batch 256 --steps 10 --warmup 3 --repeats 5)
  declare -A compile_timeout=([resnet50]=150 [alexnet]=60 [vgg16]=90 [googlenet]=60)
fi
mkdir -p "$(dirname "$OUT_FILE")"

status=0
for model in resnet50 alexnet vgg16 googlenet; do
  if (( SECONDS > BUDGET_S )); then
    echo "# $model: skipped, the time budget (BUDGET_S=$BUDGET_S s) was spent" >&2
    status=1
    continue
  fi
  peers=jaxcnn,torch_eager,torch_compile
  [[ $model == resnet50 ]] && peers=jaxcnn,plain_flax,torch_eager,torch_compile
  echo "# $model (${SECONDS} s into the run)"
  python benchmarks/train_throughput.py --model "$model" --peers "$peers" "${common[@]}" \
    --compile-timeout "${compile_timeout[$model]}" --json "$OUT_FILE" | grep -v '^{' || status=1
done
# Is training from JPEG files input-bound? The engine on JPEG files with one grain worker per
# core against the same step on a batch already on the device (benchmarks/input_bound.py;
# its CPU form is tested on its own).
if [[ "${SMALL:-0}" != 1 ]]; then
  if (( SECONDS > BUDGET_S )); then
    echo "# input_bound: skipped, the time budget (BUDGET_S=$BUDGET_S s) was spent" >&2
    status=1
  else
    echo "# input_bound (${SECONDS} s into the run)"
    python benchmarks/input_bound.py --device gpu \
      --json "$(dirname "$OUT_FILE")/input_bound_gpu.jsonl" || status=1
  fi
fi
echo "# done in ${SECONDS} s; rows appended to $OUT_FILE"
exit $status
