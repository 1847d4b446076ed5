# The two set-up commands of the README. Each installs what it needs (scripts/setup.sh) first.
.PHONY: setup demo test bench

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
