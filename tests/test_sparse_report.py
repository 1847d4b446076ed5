"""`analyse` on hand-made sweep folders (no model runs): costs use the sweep's method options and
the tokens the model processed; the report flags what its numbers cannot carry."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from bench.sparse.costmodel import ModelShape, phase_cost, prefill_flops
from bench.sparse.report import analyse

# The shape of our tiny-llama-m (systems/lm/checkpoints/m/config.json), as a sweep stores it.
SHAPE = {"vocab_size": 907, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True,
         "model_type": "llama", "n_params": 196_736, "system_name": "toy"}
TASKS = ("niah-single", "niah-multikey")


def write_sweep(folder: Path, *, samples: int = 30, method_options: dict | None = None,
                context_tokens: int | None = None, correct: callable = lambda task, i: i % 2 == 0,
                configs=(("prefill", "block-sparse"), ("prefill", "vertical-slash"),
                         ("prefill", "flexprefill"), ("decode", "quest")),
                compressions=(2.0, 4.0), length: int = 256) -> Path:
    """A sweep folder as `bench sweep` leaves it; every sparse answer equals the dense one."""
    spec = {"models": ["toy"], "tasks": list(TASKS), "lengths": [length],
            "prefill_methods": sorted({m for p, m in configs if p == "prefill"}),
            "decode_methods": sorted({m for p, m in configs if p == "decode"}),
            "compressions": list(compressions), "n_samples": samples, "seed": 0, "mode": "teacher-forced",
            "task_options": {}, "method_options": method_options or {}}
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"digest": "x", "spec": spec}))
    (folder / "models").mkdir()
    (folder / "models" / "toy.json").write_text(json.dumps(SHAPE))
    rows = [("dense", "dense", 1.0)] + [(p, m, c) for p, m in configs for c in compressions]
    with open(folder / "records.jsonl", "w") as f:
        for task in TASKS:
            for i in range(samples):
                for phase, method, c in rows:
                    ok = correct(task, i)
                    record = {"model": "toy", "params": SHAPE["n_params"], "task": task, "length": length,
                              "sample_id": f"{task}-{i}", "phase": phase, "method": method, "compression": c,
                              "score": float(ok), "correct": int(ok), "sparsity": 1 - 1 / c,
                              "prediction": "", "seconds": 0.1, "failure": None, "detail": ""}
                    if context_tokens is not None:
                        record["n_context_tokens"] = context_tokens
                    f.write(json.dumps(record) + "\n")
    return folder


def frontier_cost(result: dict, phase: str, method: str, compression: float) -> float:
    (row,) = [r for r in result["frontier"] if (r["phase"], r["method"], r["compression"]) ==
              (phase, method, compression)]
    return row["cost"]


# --------------------------------------------------------------------------- issue 7 #15
def test_frontier_costs_use_the_method_options_the_sweep_ran_with(tmp_path):
    options = {"block-sparse": {"block": 8}, "flexprefill": {"block": 8, "min_budget": 8, "local": 4},
               "vertical-slash": {"last_q": 32, "local": 4}, "quest": {"page_size": 8}}
    folder = write_sweep(tmp_path / "sweep", method_options=options, context_tokens=257)
    result = analyse(folder, plots=False)
    shape = ModelShape.from_hf_config(SHAPE)
    for phase, method, costed in (("prefill", "block-sparse", {"block": 8}), ("prefill", "flexprefill", {"block": 8}),
                                  ("prefill", "vertical-slash", {"last_q": 32}), ("decode", "quest", {"page_size": 8})):
        expected = phase_cost(shape, phase, 257, 4.0, method, **costed)
        assert frontier_cost(result, phase, method, 4.0) == pytest.approx(expected, rel=1e-12), method
        assert expected != pytest.approx(phase_cost(shape, phase, 257, 4.0, method), rel=1e-6), \
            f"{method}: the options must change the cost for this test to mean anything"


def test_cost_model_takes_every_method_option_by_the_methods_own_name():
    """One name per option: what `--method-opt` sets is what the cost model reads."""
    from systems.lm.attention import catalogue

    shape = ModelShape.from_hf_config(SHAPE)
    for method, entry in catalogue().items():
        for phase in entry["phases"]:
            for option, declared in entry["options"].items():
                value = declared["default"] if declared["default"] is not None else 64
                phase_cost(shape, phase, 512, 1.0 if method == "dense" else 2.0, method, **{option: value})
    assert prefill_flops(shape, 512, 0.5, "block-sparse", block=8)["selection"] != \
        prefill_flops(shape, 512, 0.5, "block-sparse", block=64)["selection"]
    with pytest.raises(ValueError, match="block_size"):
        phase_cost(shape, "prefill", 512, 2.0, "block-sparse", block_size=8)
    # An option the sweep leaves alone is costed at the method's own default.
    from bench.sparse import costmodel

    methods = catalogue()
    for function, method, option in ((costmodel.vertical_slash_selection_flops, "vertical-slash", "last_q"),
                                     (costmodel.flexprefill_selection_flops, "flexprefill", "block"),
                                     (costmodel.block_sparse_selection_flops, "block-sparse", "block"),
                                     (costmodel.decode_memory, "quest", "page_size")):
        default = inspect.signature(function).parameters[option].default
        assert default == methods[method]["options"][option]["default"], (method, option)


# --------------------------------------------------------------------------- issue 7 #16
def test_prefill_and_decode_costs_count_the_bos_token_the_model_processed(tmp_path):
    result = analyse(write_sweep(tmp_path / "bos", context_tokens=257), plots=False)
    shape = ModelShape.from_hf_config(SHAPE)
    assert frontier_cost(result, "prefill", "dense", 1.0) == phase_cost(shape, "prefill", 257)
    assert frontier_cost(result, "decode", "dense", 1.0) == phase_cost(shape, "decode", 257)
    assert "257" in result["cost_context"] and "BOS" in result["cost_context"]
    # Records from before the token count was kept: costed at the task length, and the report says so.
    old = analyse(write_sweep(tmp_path / "old"), plots=False)
    assert frontier_cost(old, "prefill", "dense", 1.0) == phase_cost(shape, "prefill", 256)
    report = (tmp_path / "old" / "analysis" / "report.txt").read_text()
    assert "BOS" in report and "not counted" in report


def test_analyse_uses_the_cli_default_margin():
    from bench.cli import build_parser
    from bench.sparse.safety import DEFAULT_MARGIN, safe_sparsity

    cli = build_parser().parse_args(["sweep", "--models", "x", "--tasks", "y", "--lengths", "256"])
    fit = build_parser().parse_args(["fit", "somewhere"])
    assert inspect.signature(analyse).parameters["margin"].default == cli.margin == fit.margin == 0.10
    assert inspect.signature(safe_sparsity).parameters["margin"].default == DEFAULT_MARGIN == 0.10


def test_too_few_samples_to_decide_is_not_reported_as_a_verdict(tmp_path):
    # 20 samples a task with identical answers: no outcome could show non-inferiority at margin 0.10.
    result = analyse(write_sweep(tmp_path / "few", samples=20), plots=False)
    rows = result["safe_sparsity_table"]
    assert rows and all(r["decision"] == "too few samples to decide" for r in rows)
    report = (tmp_path / "few" / "analysis" / "report.txt").read_text()
    assert "too few samples to decide" in report
    assert "smallest n" in report
    # 60 a task (Holm over two tasks needs 35 at least): identical answers are safe.
    result = analyse(write_sweep(tmp_path / "enough", samples=60), plots=False)
    assert all(r["decision"] == "decided" and r["safe_compression"] == 4.0 for r in result["safe_sparsity_table"])


def test_a_fit_that_did_not_converge_is_marked_with_its_standard_errors(tmp_path):
    folder = write_sweep(tmp_path / "zero", correct=lambda task, i: False)
    result = analyse(folder, plots=False)
    fit = result["scaling"]["prefill"]["fit"]
    assert fit["converged"] is False
    report = (folder / "analysis" / "report.txt").read_text()
    block = report[report.index("scaling law, prefill"):]
    assert "did not converge" in block.splitlines()[0] + block.splitlines()[1]
    assert "±" in block and "eps" in fit["standard_errors"]


# --------------------------------------------------------------------------- issue 7 #17
REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "benchmarks" / "results" / "sparse-sweep-7015713d1718"


def _report_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The report's tables by their title line, each row a dict by column header."""
    import re

    lines, tables, title = text.splitlines(), {}, ""
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-+( +-+)*", lines[i + 1].strip()) and line.strip():
            header = re.split(r"\s{2,}", line.strip())
            # a repeated column name ('by' after each phase's C) is told apart by the column before it
            header = [h if h not in header[:j] else f"{h} ({header[j - 1]})" for j, h in enumerate(header)]
            rows = []
            for row in lines[i + 2:]:
                if not row.strip():
                    break
                rows.append(dict(zip(header, re.split(r"\s{2,}", row.strip()))))
            tables[title] = rows
        elif line and not line.startswith(" ") and not line.startswith("-"):
            title = line.split(":")[0]
    return tables


def _scaling(text: str) -> dict[str, dict]:
    import re

    out: dict[str, dict] = {}
    for phase, body in re.findall(r"scaling law, (\w+):.*?\n((?:  .*\n?)+)", text):
        coefficients = dict(re.findall(r"(eps|alpha|beta|gamma) (-?[\d.]+)", body.splitlines()[0]
                                       if "did not converge" not in body.splitlines()[0] else body.splitlines()[1]))
        held = {axis: dict(re.findall(r"([\w-]+): rho \S+ MAE ([\d.]+)", line))
                for axis, line in re.findall(r"held out largest (\w+)[^:]*: (.*)", body)}
        out[phase] = {"coefficients": coefficients, "held_out": held}
    return out


def test_readme_claims_about_the_committed_sweep_equal_its_report():
    import re

    from bench.sparse.safety import smallest_deciding_n

    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = " ".join(text[text.index("## Sparse attention"):text.index("### Our model family")].split())
    report = (COMMITTED / "report.txt").read_text(encoding="utf-8")
    tables, scaling = _report_tables(report), _scaling(report)

    records, failed = re.match(r"records: (\d+) \((\d+) failed", report).groups()
    assert f"{int(records):,} evaluations" in section

    safe = next(rows for rows in tables.values() if rows and "dense acc" in rows[0])
    dense = {(r["model"].removeprefix("tiny-llama-"), r["length"]): r["dense acc"] for r in safe}
    claim = re.search(r"Dense accuracy, mean over the three tasks at 256 / 512 tokens: m (\S+) / (\S+), "
                      r"s (\S+) / (\S+), xs (\S+) / (\S+?)[ ,(]", section)
    assert claim, "the README's dense-accuracy claim"
    assert list(claim.groups()) == [dense[(m, n)] for m in ("m", "s", "xs") for n in ("256", "512")]

    margin = re.search(r"margin ([\d.]+), alpha", report).group(1)
    assert f"margin {margin}, Holm across the 3 tasks" in section
    assert f"well above the {smallest_deciding_n(float(margin), 0.05, tasks=3)} below which" in section
    phases = {(r["model"].removeprefix("tiny-llama-"), r["length"]): r
              for r in next(rows for rows in tables.values() if rows and "prefill C" in rows[0])}
    claim = re.search(r"`s` keeps its accuracy up to C = (\S+) in prefill \((\S+)\) and up to C = (\S+) in "
                      r"decode \((\S+) at 256, (\S+) at 512\)", section)
    assert claim, "the README's safe-sparsity claim for s"
    prefill_c, prefill_by, decode_c, decode_256, decode_512 = claim.groups()
    s256, s512 = phases[("s", "256")], phases[("s", "512")]
    assert float(prefill_c) == float(s256["prefill C"]) == float(s512["prefill C"])
    assert prefill_by == s256["by"] == s512["by"]
    assert float(decode_c) == float(s256["decode C"]) == float(s512["decode C"])
    assert [decode_256, decode_512] == [s256["by (decode C)"], s512["by (decode C)"]]
    assert "`m` has no safe level in either phase" in section
    assert all(float(phases[("m", n)][c]) == 1.0 for n in ("256", "512") for c in ("prefill C", "decode C"))

    claim = re.search(r"alpha (\S+) / (\S+) \(ln N\), gamma (\S+) / (\S+) \(ln C\) for prefill / decode", section)
    assert claim, "the README's scaling-law coefficients"
    assert list(claim.groups()) == [scaling[p]["coefficients"][k] for k in ("alpha", "gamma")
                                    for p in ("prefill", "decode")]
    claim = re.search(r"largest compression is predicted with a mean absolute error per task of at most "
                      r"(\S+) in prefill and (\S+) in decode", section)
    assert claim, "the README's held-out compression claim"
    worst = [max(scaling[p]["held_out"]["compression"].values(), key=float) for p in ("prefill", "decode")]
    assert list(claim.groups()) == worst
    claim = re.search(r"the largest model is not \(MAE (\S+)-(\S+) on single needles, (\S+) on four keys", section)
    assert claim, "the README's held-out model-size claim"
    single = sorted((scaling[p]["held_out"]["params"]["niah-single"] for p in ("prefill", "decode")), key=float)
    multikey = {scaling[p]["held_out"]["params"]["niah-multikey"] for p in ("prefill", "decode")}
    assert list(claim.groups()) == [single[0], single[-1], *multikey]
