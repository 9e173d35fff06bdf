#!/usr/bin/env bash
# One-shot GPU check for a fresh machine with one NVIDIA H100/H200 (fits in 8 minutes; downloads nothing).
#
#   bash benchmarks/gpu_check.sh            # from the repo root; ../shared/data must hold Beauty
#   bash benchmarks/gpu_check.sh --dry-run  # CPU smoke test: tiny synthetic data, ~2-3 min, files in benchmarks/scratch/gpu_dry/
#
# Parts (each its own process under `timeout`; a failed or killed part is recorded in its file and the next runs):
#   1 sasrec  SASRec Beauty, train.precision=bf16, train.compile=true, to early stopping (training budget 110 s)
#   2 emkd    official EMKD Beauty (N 3, M 8, d 256): whole epochs inside 80 s, s/epoch, peak GPU memory
#   3 epochs  MCLRec and MQSA-TED Beauty: one epoch each (25 s budget each, a partial epoch is marked)
#   4 syncs   host syncs per training step (CUDA sync debug mode + dispatch counter) for 7 models over 20 steps on
#             small synthetic data, and SASRec bf16 eager vs compile step time
# Results: benchmarks/results/gpu_{sasrec,emkd,epochs,syncs}.json (provenance, status ok|error, numbers); summary printed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
T0=$SECONDS
TOTAL=${GPU_CHECK_TOTAL_S:-470}     # hard ceiling for the whole script (8 minutes minus a margin)
[ -n "$DRY" ] && TOTAL=${GPU_CHECK_TOTAL_S:-1500}   # the CPU smoke test on a shared, loaded machine: no 8-minute limit

# seqrec importable? install the working tree in place without dependencies or downloads, else use src/ directly
if ! $PY -c "import seqrec" 2>/dev/null; then
    $PY -m pip install -e . --no-deps --no-build-isolation --no-index -q 2>&1 | tail -3
    if ! $PY -c "import seqrec" 2>/dev/null; then
        echo "[gpu_check] pip install -e . failed; using PYTHONPATH=src"
        export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
$PY -c "import torch, seqrec; print('[gpu_check] torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" || exit 1
[ -z "$DRY" ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; }

# part name, timeout (s), training budget (s); dry run: a few seconds each
if [ -n "$DRY" ]; then
    PARTS=("sasrec 300 20" "emkd 200 10" "epochs 200 10" "syncs 500 0")
else
    PARTS=("sasrec 160 110" "emkd 115 80" "epochs 75 50" "syncs 110 0")
fi
for spec in "${PARTS[@]}"; do
    read -r part limit budget <<< "$spec"
    left=$(( TOTAL - (SECONDS - T0) ))
    if [ "$left" -lt 20 ]; then
        echo "[gpu_check] $part skipped: ${left}s left of ${TOTAL}s"
        $PY benchmarks/gpu_check.py $DRY --mark-failed "$part" --reason "skipped: ${left}s left of the ${TOTAL}s total"
        continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "[gpu_check] part $part (timeout ${limit}s, budget ${budget}s) at $(( SECONDS - T0 ))s"
    timeout -k 10 "$limit" $PY benchmarks/gpu_check.py $DRY --part "$part" --budget-s "$budget"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        reason="exit status $rc"
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && reason="killed by its ${limit}s timeout (rc $rc)"
        $PY benchmarks/gpu_check.py $DRY --mark-failed "$part" --reason "$reason"
    fi
done
$PY benchmarks/gpu_check.py $DRY --summary
echo "[gpu_check] done in $(( SECONDS - T0 ))s"
