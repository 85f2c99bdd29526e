#!/bin/bash
# One-shot GPU checks for a lent GPU machine (run from the repository root; $OUT: where results go):
#   kernels (bench + tests), CG-Taylor on a FLUX-layout transformer (tools/gpu/flux_cache.py), IDM training memory
#   with the CUDA allocator, IDM fine-tuning for 10/30/50% calibrated to finish before a deadline.
# The machine's image has torch/triton/accelerate but not diffusers or PyWavelets: put their wheels in .whl/
#   (pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl diffusers==0.42.1 PyWavelets==1.9.0
#    importlib_metadata). Settings: BATCH, CROP, LR (default 8, 256, 2e-4: the shipped stage 2), INIT_DIR (weights to
#    start from; default the shipped ones), BUDGET seconds in all (default 540: the checks take up to ~6.5 min of
#    it, so IDM training gets what is left; a lease with more time should raise it, a run without training
#    can stop after the kernel tests), CHECKS (default kernels,flux,idm_mem,step: which checks run before the
#    training; `step` times one fine-tuning step in fp32 and bf16 autocast and the training uses the faster,
#    PRECISION=no|bf16 forces one), RATIOS (default 0.1,0.3,0.5), TRAIN=0 skips the training.
# Results: $OUT/results.tgz and $OUT/idm-r{10,30,50}.safetensors. Figures measured with it: docs/kernels.md, docs/caching.md.
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s); END=$((T0 + ${BUDGET:-540}))
R=$OUT/r; rm -rf /tmp/idm; mkdir -p $R /tmp/idm
stamp(){ echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $R/timeline.log; }
finish(){ stamp finish; cd $OUT && tar czf results.tgz r && rm -rf r; }
trap finish EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > $R/setup.log 2>&1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >> $R/setup.log 2>&1 || stamp "editable install failed"
nvidia-smi > $R/nvidia-smi.txt 2>&1; python3 -m pip list 2>/dev/null | grep -i -E "^(torch|triton|diffusers|accelerate) " >> $R/nvidia-smi.txt
A="python3 -m accel.cli.main"
stamp setup done
CHECKS=${CHECKS:-kernels,flux,idm_mem,step}
has(){ [[ ",$CHECKS," == *",$1,"* ]]; }
has kernels && { timeout 110 $A bench kernels --json $R/kernels-h200.json --md $R/kernels-h200.md --png $R/kernels-h200.png --no-progress > $R/kernels_bench.log 2>&1; stamp "kernels bench rc=$?"; }
has flux && { OUT=$R timeout 130 python3 tools/gpu/flux_cache.py > $R/gpu_checks.log 2>&1; stamp "gpu checks rc=$?"; }
# one subprocess per config, ~17 s each (start-up included): T=3 and 10 only, before the training shares the GPU
has idm_mem && { timeout 150 $A bench idm --what memory --device cuda --T 3,10 --repeats 3 --json $R/idm-mem.json --markdown $R/idm-mem.md > $R/idm_mem.log 2>&1; stamp "idm memory rc=$?"; }
if [ -z "${PRECISION:-}" ] && has step; then
  OUT=$R timeout 120 python3 tools/gpu/idm_step.py > $R/idm_step.log 2>&1; stamp "idm step rc=$?"
  PRECISION=$(python3 -c "import json; print(json.load(open('$R/idm_step.json'))['best'])" 2>/dev/null || echo no)
fi
export PRECISION=${PRECISION:-no}
if [ "${TRAIN:-1}" = 1 ]; then
  python3 tools/gpu/train_idm.py $((END - 45)) > $R/train_driver.log 2>&1 &
  TP=$!
  stamp "training started (mixed precision $PRECISION)"
fi
has kernels && { timeout 150 python3 -m pytest tests/test_kernels.py tests/test_kernels_bench.py -q -p no:cacheprovider > $R/kernels_pytest.log 2>&1; stamp "kernel tests rc=$?"; }
[ -n "${TP:-}" ] && { wait $TP; stamp "training rc=$?"; }
