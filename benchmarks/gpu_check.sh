#!/usr/bin/env bash
# GPU check: the tiny end-to-end config on accelerator=gpu devices=1 (fit, then test), then
# imagined-rollout transitions/s on GPU vs CPU at the default acrobot sizes. Exits non-zero on
# any failure. Run from the repository root on a machine with a CUDA build of torch:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print(torch.cuda.get_device_name(0))"
work="$(mktemp -d)"
common=(--config "$PWD/conf/acrobot.yaml" --config "$PWD/tests/configs/tiny_dyna.yaml" --trainer.accelerator gpu --trainer.devices 1)
(cd "$work" && python "$OLDPWD/train.py" fit "${common[@]}")
(cd "$work" && python "$OLDPWD/train.py" test "${common[@]}" --ckpt_path runs/acrobot/fixed/checkpoints/last.ckpt)
python - "$work/runs/acrobot/fixed/metatest.json" <<'PY'
import json, math, sys
report = json.load(open(sys.argv[1]))
assert all(math.isfinite(r["return_mean"]) for r in report["tasks"]), "non-finite meta-test returns"
print("tiny end-to-end on GPU: ok,", len(report["tasks"]), "meta-test rows")
PY
python benchmarks/throughput.py --devices cpu cuda
