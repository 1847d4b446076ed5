#!/bin/bash
# The flow family's duration-free form (E2/F5 filler padding) beside the duration-aware form, the
# same recipe, on one GPU, from a corpus pack (systems/tts/checkpoints/README.md, "On a GPU").
#   here:  bench tts-corpus --pack gpu/corpus.pack && cp -r systems/tts/checkpoints/aligner gpu/
#   there: OUT=results STEPS=5400 bash scripts/tts_gpu_duration_free.sh
# Without STEPS, a 100-step probe of both side by side sizes the runs to MINUTES (it overestimates
# the step time: it counts the start-up).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to a folder for the logs and checkpoints}
MINUTES=${MINUTES:-6.5}
BATCH=${BATCH:-64}
DEVICE=${DEVICE:-cuda}
PACK=${PACK:-gpu/corpus.pack}
ALIGNER=${ALIGNER:-gpu/aligner}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\")" || exit 3
python3 -m systems.tts.corpus --unpack "$PACK" --out /tmp/corpus || exit 4
train() {  # name, steps, extra args
  rm -rf /tmp/ck_$1; mkdir -p /tmp/ck_$1; cp -r "$ALIGNER" /tmp/ck_$1/aligner
  python3 -m systems.tts.train --family flow --corpus /tmp/corpus --out /tmp/ck_$1 --device $DEVICE \
    --batch $BATCH --steps $2 --threads 2 ${@:3} > $OUT/$1.log 2>&1
}
if [ -z "${STEPS:-}" ]; then
  train probe_filler 100 --alignment filler & train probe_duration 100 &
  wait
  grep -h "step 100:" $OUT/probe_*.log || { tail -20 $OUT/probe_*.log; exit 5; }
  rate=$(grep -h "step 100:" $OUT/probe_*.log | sed 's/.*(\([0-9.]*\) s\/step).*/\1/' | sort -g | tail -1)
  steps=$(python3 -c "print(int(60 * $MINUTES / max($rate, 1e-3) / 100) * 100)")
  echo "probe: $rate s/step side by side -> $steps steps each"
  rm $OUT/probe_*.log
else
  steps=$STEPS
fi
train filler $steps --alignment filler --minutes $MINUTES & train duration $steps --minutes $MINUTES &
wait
for n in filler duration; do
  mkdir -p $OUT/$n; cp /tmp/ck_$n/flow/{config.json,model.safetensors,train_log.json} $OUT/$n/ 2>/dev/null
  tail -3 $OUT/$n.log
done
