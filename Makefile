# The two set-up commands of the README. Each installs what it needs (scripts/setup.sh) first.
.PHONY: setup demo test bench sparse-sweep

setup:
	./scripts/setup.sh

# The main job on the embedded default task: ground truth and flite on librivox-mini.
demo: setup
	.venv/bin/bench run --systems ground-truth,flite --task librivox-mini --out runs

test: setup
	.venv/bin/python -m pytest -q

# Side-by-side speed benchmarks (cached re-run vs first run; batched vs per-file scoring).
bench: setup
	.venv/bin/python benchmarks/scoring_speed.py

# The sparse-attention grid of the README: 3 sizes of our model family x 6 compression ratios x
# 4 methods x 2 phases x 3 tasks x 2 lengths, 100 samples each, then the analyses.
# With --jobs 2 the models start in the order given: largest first keeps both cores busy.
# Method structure is scaled to 256-512-token prompts (8-token blocks, 4 local diagonals,
# 16-token SnapKV observation windows: with 8, tiny-llama-m lost the end of the needle even at C=2).
SWEEP_MODELS ?= tiny-llama-m,tiny-llama-s,tiny-llama-xs
SWEEP_SAMPLES ?= 100
sparse-sweep: setup
	.venv/bin/bench sweep --models $(SWEEP_MODELS) \
	  --tasks niah-single,niah-multikey,niah-multivalue \
	  --task-opt niah-multikey.haystack=noise --task-opt niah-multivalue.haystack=noise \
	  --lengths 256,512 --compressions 1.5,2,3,5,8,12 \
	  --prefill-methods vertical-slash,flexprefill,block-sparse,streaming \
	  --decode-methods snapkv,ada-snapkv,quest,streaming \
	  --method-opt vertical-slash.local=4 --method-opt vertical-slash.last_q=32 \
	  --method-opt flexprefill.block=8 --method-opt flexprefill.min_budget=8 --method-opt flexprefill.local=4 \
	  --method-opt block-sparse.block=8 --method-opt snapkv.window=16 --method-opt ada-snapkv.window=16 \
	  --samples $(SWEEP_SAMPLES) --jobs 2 --out runs
