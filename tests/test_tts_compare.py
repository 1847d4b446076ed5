"""bench tts-compare's pieces: the ablation grids, the tables, the README sections."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from systems.tts.compare import ABLATIONS, ablation_grid, table, write_readme_section


def _summary() -> dict:
    def metric(primary, mean, lo, hi):
        return {"primary": primary, "values": {primary: {"mean": mean, "ci_low": lo, "ci_high": hi, "n": 4}}}

    perf = {"n_items": 4, "n_failed": 1, "failure_reasons": {"no_stop": 1}, "rtf_p50": 0.5, "rtf_p95": 0.9,
            "first_packet_s_p50": 0.25}
    return {"systems": {"tiny-ar": {"performance": perf, "metrics": {
        "wer": metric("wer", 0.25, 0.2, 0.3), "sim": metric("sim", 0.7, 0.68, 0.72)}}}}


def test_table_shows_values_with_half_ci_and_failures():
    text = table(_summary(), ["tiny-ar", "absent"], {"tiny-ar": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}})
    lines = text.splitlines()
    assert lines[0] == ("| system | WER % | SIM (own prompt) | SIM (other voice's prompt) | RTF p50 / p95 | "
                        "first packet s | failures |")
    assert lines[2] == "| `tiny-ar` | 25.0 ± 5.0 | 0.700 ± 0.020 | 0.500 ± 0.100 | 0.500 / 0.900 | 0.25 | 1/4 (no_stop 1) |"
    assert len(lines) == 3, "a system without results is left out, not shown empty"


def test_ablation_grids_are_the_papers():
    task, systems, options = ablation_grid("flow")
    assert task == "tts-seen" and len(systems) == 10
    assert {(o["nfe"], o["sway"]) for o in options.values()} >= {(n, s) for n in (4, 8, 16, 32) for s in (0.0, -1.0)}
    assert sorted(o["steps"] for o in ablation_grid("nar")[2].values()) == [4, 8, 16, 25]
    task, systems, _ = ablation_grid("ar")
    assert task == "tts-hard" and "tiny-ar@temp07-k10" in systems
    from bench.registry import split_variant

    task, systems, options = ablation_grid("acoustic")
    assert task == "tts-seen" and {o["acoustic"] for o in options.values()} == {"decoder", "codebooks"}
    assert {s.split("@")[0] for s in systems} == {"tiny-ar", "tiny-nar"}
    # The development set's grid: the token families' sampling settings, on tts-dev only.
    task, systems, options = ablation_grid("dev")
    assert task == "tts-dev" and {s.split("@")[0] for s in systems} == {"tiny-ar", "tiny-nar"}
    assert sorted(o["steps"] for s, o in options.items() if s.startswith("tiny-nar")) == [4, 8, 16, 25]
    assert {o.get("stream_context", 0) for s, o in options.items() if s.startswith("tiny-ar")} == {0, 96}
    for grid in ABLATIONS:  # every label is a valid variant label
        assert all(split_variant(name)[1] for name in ablation_grid(grid)[1])
    with pytest.raises(BenchError):
        ablation_grid("nope")


def test_readme_sections_are_replaced_between_their_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- tts:x:start -->\nold\n<!-- tts:x:end -->\nb\n")
    write_readme_section(readme, "x", "new table")
    assert readme.read_text() == "a\n<!-- tts:x:start -->\nnew table\n<!-- tts:x:end -->\nb\n"
    with pytest.raises(BenchError, match="no markers"):
        write_readme_section(readme, "y", "t")
