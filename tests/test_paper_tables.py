"""Paper tables: each published figure gets one verdict from stored results, protocol differences
are stated, and what cannot be reproduced here says what it needs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from bench.cli import main
from reports.paper_tables import load_published, normalise_name, sparse_row, tts_row
from tests.browser import Elements, needs_chromium, open_page

ROW = {"id": "x", "kind": "number", "system": "F5-TTS (32 NFE)", "family": "flow",
       "test_set": "LibriSpeech-PC test-clean 4-10s", "n_items": "1127", "metric": "WER%", "value": "2.42",
       "protocol": "faster-whisper-large-v3", "source": "F5-TTS paper"}


def _run(system: str, mean: float, low: float, high: float, asr: str = "whisper-large-v3") -> SimpleNamespace:
    summary = {"spec": {"task": {"name": "librispeech-pc", "options": {}}},
               "evaluators": {"wer": f"wer-v3|asr={asr}:abc|norm=seedtts"},
               "environment": {"cpu": "test cpu"},
               "systems": {system: {"metrics": {"wer": {"values": {"wer": {"mean": mean, "ci_low": low, "ci_high": high}}}},
                                    "performance": {"rtf_p50": 0.2}}}}
    return SimpleNamespace(summary=summary, systems=[system], folder=Path("librispeech-pc-abc"))


def test_names_match_across_spelling_and_variants():
    assert normalise_name("F5-TTS (32 NFE)") == normalise_name("f5_tts@nfe32") == "f5tts"
    assert normalise_name("ground_truth") == normalise_name("ground-truth")


def test_verdicts_for_measured_rows():
    assert tts_row(ROW, [_run("f5-tts@nfe32", 0.0250, 0.0200, 0.0300)]).verdict == "reproduced (within CI)"
    row = tts_row(ROW, [_run("f5-tts", 0.0400, 0.0350, 0.0450)])
    assert row.verdict == "differs by +1.58" and row.protocol == ""
    base = tts_row(ROW, [_run("f5-tts", 0.0250, 0.0200, 0.0300, asr="whisper-base")])
    assert base.protocol == "ASR whisper-base instead of whisper-large-v3"


def test_what_cannot_be_reproduced_says_what_it_needs():
    row = tts_row(ROW, [])
    assert row.verdict.startswith("not reproducible here: needs the librispeech-pc test set")
    assert "F5-TTS (32 NFE) itself" in row.verdict and "whisper-large-v3 weights for wer" in row.verdict
    other = tts_row({**ROW, "test_set": "RALL-E protocol"}, [])
    assert "no task of this harness implements" in other.verdict


def test_sparse_rows_compare_directions(tmp_path):
    (tmp_path / "scaling.json").write_text(json.dumps({"prefill": {"fit": {"coefficients": {"gamma": -1.7, "beta": 0.6},
                                                                          "standard_errors": {"gamma": 0.03}}}}))
    pairs = [{"model": "tiny-llama-m", "length": 256, "prefill": 1.0, "decode": 1.0,
              "prefill_decision": "decided", "decode_decision": "decided"},
             {"model": "tiny-llama-s", "length": 256, "prefill": 2.0, "decode": 5.0,
              "prefill_decision": "decided", "decode_decision": "decided"},
             {"model": "tiny-llama-xs", "length": 256, "prefill": 12.0, "decode": 12.0,
              "prefill_decision": "decided", "decode_decision": "decided"}]
    dense = [{"model": m, "length": 256, "dense_accuracy": a} for m, a in
             (("tiny-llama-m", 0.54), ("tiny-llama-s", 0.34), ("tiny-llama-xs", 0.0))]
    (tmp_path / "safe_sparsity.json").write_text(json.dumps({"rows": dense, "prefill_vs_decode": pairs}))
    rows = {r["id"]: r for r in load_published()}
    assert sparse_row(rows["sf-prefill-gamma"], tmp_path).verdict.startswith("trend reproduced at small scale")
    assert sparse_row(rows["sf-prefill-beta"], tmp_path).verdict == "trend differs (opposite sign)"
    finding = sparse_row(rows["sf-decode-vs-prefill"], tmp_path)
    assert finding.verdict.startswith("trend reproduced at small scale: decode tolerates more compression in all 1")


@needs_chromium
def test_the_page_from_the_committed_data(tmp_path):
    out = tmp_path / "paper.html"
    assert main(["paper-tables", "--out", str(out)]) == 0
    dom, console = open_page(out)
    assert console == [] and "Published numbers beside ours" in dom
    assert len(load_published()) == Elements(dom).tags.count("tr") - 1
