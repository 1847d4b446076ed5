# The two set-up commands of the README. Each installs what it needs (scripts/setup.sh) first.
.PHONY: setup demo test bench sparse-sweep tts-corpus tts-train tts-compare tts-ablations leaderboard

setup:
	./scripts/setup.sh

# The main job on the embedded default task: our three TTS families beside ground truth, the
# vocoder's ceiling and flite, on librivox-mini (real speech prompts, out of our models' domain).
demo: setup
	.venv/bin/bench run --systems ground-truth,vocoder-ceiling,tiny-ar,tiny-nar,tiny-flow,flite --task librivox-mini --out runs

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

# Our TTS families from scratch: the corpus, then aligner, tokenizer and the three families (CPU).
# flow, nar and ar can run side by side (one thread each); the committed ones did.
tts-corpus: setup
	.venv/bin/bench tts-corpus --out data/tts-corpus
tts-train: tts-corpus
	.venv/bin/bench train-tts --family aligner --threads 2
	.venv/bin/bench train-tts --family tokenizer
	.venv/bin/bench train-tts --family flow & f=$$!; .venv/bin/bench train-tts --family nar & n=$$!; \
	  .venv/bin/bench train-tts --family ar & a=$$!; wait $$f && \
	  .venv/bin/bench train-tts --family decoder && wait $$n && wait $$a

# The comparison and ablations of the README (run folders in runs/; tables into README.md).
tts-compare: setup
	.venv/bin/pip install -q -e ".[piper]"  # Piper's joe is one of the held-out voices (GPL code: a corpus tool only)
	.venv/bin/bench tts-compare --metrics wer,sim,distillmos --readme README.md
tts-ablations: setup
	.venv/bin/bench tts-compare --ablation dev --readme README.md
	.venv/bin/bench tts-compare --ablation flow --readme README.md
	.venv/bin/bench tts-compare --ablation nar --readme README.md
	.venv/bin/bench tts-compare --ablation ar --readme README.md
	.venv/bin/bench tts-compare --ablation acoustic --readme README.md

# The static leaderboard site from the committed results (leaderboard/results) into site/.
leaderboard: setup
	.venv/bin/bench leaderboard build --out site
