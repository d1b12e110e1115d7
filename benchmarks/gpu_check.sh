#!/usr/bin/env bash
# The CUDA path, checked and measured on a GPU machine, in one short run (about 5 minutes).
#
#   bash benchmarks/gpu_check.sh [CLIPS_FOLDER]      # default: ../shared/realdata/kth_walk_run
#
# 1. the tests that need CUDA (tests/test_cuda.py: extraction against the CPU, half precision,
#    spatial maps from the device, stage two from RAM and from disk, convlstm);
# 2. `harx extract` on the real clips (a folder dataset, one stream, every frame) with 1, 2, 4, 8
#    and (CPUs - 1) decoding workers, GPU utilisation sampled every 0.5 s by nvidia-smi meanwhile;
# 3. `benchmarks/extract.py --device cuda` on the same clips: decoding alone, the backbone alone;
# 4. a verdict: harx's best frames/s, the workers it took, and whether decoding or the GPU is the
#    bottleneck (decode-bound: harx reaches what the decoders deliver while the GPU idles part
#    of the time; GPU-bound: utilisation near 100 %). Goal on an H100-class card: decode-bound and
#    at least 2,000 lite0 frames/s end to end.
#
# Everything printed is also written under $OUT (or ./gpu_check_out), the last line as JSON.
# DEVICE=cpu runs the same steps on the CPU (no nvidia-smi needed): a dry run of the script's own
# plumbing on a machine without a GPU, with small clips, e.g. `DEVICE=cpu bash benchmarks/gpu_check.sh
# ../shared/realdata/kth`; its numbers say nothing about the GPU.
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3); where harx is
# not installed, the checkout itself is put on the path as package `harx`.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CLIPS=${1:-../shared/realdata/kth_walk_run}
OUT=${OUT:-$REPO/gpu_check_out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1 HARX_HOME=${HARX_HOME:-$(mktemp -d)}
if ! "$PY" -c "import harx" 2>/dev/null; then          # not installed: the checkout is the package
  mkdir -p /tmp/harx-path && ln -sfn "$REPO" /tmp/harx-path/harx
  export PYTHONPATH=/tmp/harx-path${PYTHONPATH:+:$PYTHONPATH}
fi
HARX=("$PY" -m harx)
log() { echo "$@" | tee -a "$OUT/gpu_check.log"; }

log "== machine"
SMI=$(command -v nvidia-smi || true)
[ "$DEVICE" = cuda ] || SAMPLE_GPU=no
[ -n "$SMI" ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu_check.log"
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0), 'timm', timm.__version__)" \
    | tee -a "$OUT/gpu_check.log"
  [ "${PIPESTATUS[0]}" = 0 ] || { log "torch sees no CUDA device: nothing to check (DEVICE=cpu for a dry run)"; exit 1; }
else
  log "DEVICE=$DEVICE: a dry run of the script, not a GPU measurement"
fi
log "cpus $(nproc)"

log "== 1. tests that need CUDA"
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee -a "$OUT/gpu_check.log"
TESTS_RC=${PIPESTATUS[0]}

if [ ! -d "$CLIPS" ]; then
  log "no clips at $CLIPS: steps 2-3 run on benchmarks/extract.py's generated clips only"
fi

log "== 2. harx extract on $CLIPS, by decoding workers"
MAXW=$(( $(nproc) - 1 ))
WORKERS=$(printf "%s\n" 1 2 4 8 "$MAXW" | awk -v m="$MAXW" '$1 <= m' | sort -n | uniq)
: > "$OUT/runs.tsv"
if [ -d "$CLIPS" ]; then
  for w in $WORKERS; do
    : > "$OUT/util_w$w.txt"
    SAMPLER=
    if [ -n "$SMI" ] && [ "${SAMPLE_GPU:-yes}" = yes ]; then
      nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$OUT/util_w$w.txt" 2>/dev/null &
      SAMPLER=$!
    fi
    "${HARX[@]}" extract --dataset folder --root "$CLIPS" --device "$DEVICE" --streams rgb --workers "$w" \
      --out "$OUT/w$w.h5" --overwrite > "$OUT/extract_w$w.txt" 2>&1
    [ -n "$SAMPLER" ] && { kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; }
    fps=$(grep -o 'at [0-9.,]* frames/s' "$OUT/extract_w$w.txt" | head -1 | tr -d ', ' | sed 's/at//; s/frames\/s//')
    util=$(awk '{s += $1; n += 1} END {if (n) printf "%.0f", s / n; else print "?"}' "$OUT/util_w$w.txt")
    log "workers $w: ${fps:-failed} frames/s, GPU utilisation ${util} % (mean while it ran)"
    printf "%s\t%s\t%s\n" "$w" "${fps:-0}" "$util" >> "$OUT/runs.tsv"
    rm -f "$OUT/w$w.h5"
  done
fi

log "== 3. decoding alone, backbone alone (benchmarks/extract.py --device $DEVICE)"
FOLDER_ARG=()
[ -d "$CLIPS" ] && FOLDER_ARG=(--folder "$CLIPS")
"$PY" benchmarks/extract.py --device "$DEVICE" --videos 4 --rounds 1 --seconds 10 --naive-frames 50 "${FOLDER_ARG[@]}" \
  > "$OUT/extract_benchmark.txt" 2>&1
tail -5 "$OUT/extract_benchmark.txt" | tee -a "$OUT/gpu_check.log"

log "== 4. verdict"
"$PY" - "$OUT" "$TESTS_RC" <<'EOF' | tee -a "$OUT/gpu_check.log"
import json, sys
from pathlib import Path
out, tests_rc = Path(sys.argv[1]), int(sys.argv[2])
runs = [line.split("\t") for line in (out / "runs.tsv").read_text().splitlines() if line.strip()]
runs = [(int(w), float(f or 0), None if u == "?" else float(u)) for w, f, u in runs]
bench = {}
lines = (out / "extract_benchmark.txt").read_text().strip().splitlines()
if lines:
    try:
        bench = json.loads(lines[-1])
    except ValueError:
        pass
best = max(runs, key=lambda r: r[1]) if runs else None
result = {"tests_rc": tests_rc, "runs": [{"workers": w, "fps": f, "gpu_util": u} for w, f, u in runs],
          "decode_fps": bench.get("decode_fps"), "backbone_fps": bench.get("backbone_fps"),
          "harx_fps_generated_clips": bench.get("harx_fps")}
if best:
    w, fps, util = best
    result.update(best_workers=w, best_fps=fps, best_gpu_util=util,
                  bound=("unknown (no GPU utilisation sampled)" if util is None else
                         "GPU" if util >= 85 else "decoding (or the CPU around it)"),
                  goal_2000_fps=fps >= 2000)
    busy = "not sampled" if util is None else f"{util:.0f} % busy"
    print(f"best: {fps:.0f} frames/s with {w} decoding workers, GPU {busy}: bound by {result['bound']}; "
          f"goal >= 2,000 frames/s {'met' if fps >= 2000 else 'not met'}")
print(f"tests/test_cuda.py exit {tests_rc}; backbone alone {bench.get('backbone_fps')} frames/s, "
      f"decoding alone {bench.get('decode_fps')} frames/s (benchmarks/extract.py)")
print(json.dumps(result))
EOF
exit "$TESTS_RC"
