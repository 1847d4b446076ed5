"""`bench gate`: does a candidate run regress against a baseline run? For CI.

Both runs are read through bench.results (records validated, summaries checked against them).
They must be comparable: the same task, version and items, and the same evaluator revision for
every metric compared; otherwise the gate cannot decide (exit 2). Systems are paired by name, or
one named pair (`--baseline-system A --candidate-system B`, e.g. a new checkpoint under a new
name). Per system pair and metric (its primary value), on the items both runs scored:

- a paired one-sided sign-flip permutation test (bench.stats.paired_worsening_test, seeded) of
  "the candidate is worse by more than the metric's tolerance"; a regression when p < alpha;
- a failure rule: more failed items than the baseline's plus `max_new_failures` is a regression.

A failed item enters the test with the metric's failure value where it declares one (WER: 1.0,
as in its mean); otherwise it is left out of the test and counted by the failure rule.

Rules (TOML, all optional):
    [defaults]
    alpha = 0.05
    max_new_failures = 0
    tolerance = 0.0           # in the metric's units, for metrics without their own
    [metrics.wer]
    tolerance = 0.005         # half a WER point
    [metrics.sim]
    tolerance = 0.01

Exit status: 0 pass, 1 regression, 2 unusable input. Output: a console table, and on request
Markdown (a pull-request comment) and JUnit XML (CI test reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from bench.errors import BenchError

PASS, REGRESSION, UNUSABLE = 0, 1, 2


class GateUnusable(BenchError):
    """The two runs cannot be compared (exit status 2)."""


@dataclass(frozen=True)
class MetricRule:
    tolerance: float = 0.0
    alpha: float = 0.05
    max_new_failures: int = 0


@dataclass
class Rules:
    defaults: MetricRule = field(default_factory=MetricRule)
    metrics: dict[str, MetricRule] = field(default_factory=dict)

    def for_metric(self, name: str) -> MetricRule:
        return self.metrics.get(name, self.defaults)


def _rule(table: dict[str, Any], base: MetricRule, where: str) -> MetricRule:
    known = {"tolerance", "alpha", "max_new_failures"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise GateUnusable(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    values = {"tolerance": base.tolerance, "alpha": base.alpha, "max_new_failures": base.max_new_failures, **table}
    try:
        rule = MetricRule(float(values["tolerance"]), float(values["alpha"]), int(values["max_new_failures"]))
    except (TypeError, ValueError) as exc:
        raise GateUnusable(f"{where}: {exc}") from None
    if not (math.isfinite(rule.tolerance) and rule.tolerance >= 0 and 0 < rule.alpha < 1 and rule.max_new_failures >= 0):
        raise GateUnusable(f"{where}: tolerance must be >= 0, alpha in (0, 1), max_new_failures >= 0")
    return rule


def load_rules(path: Path | None) -> Rules:
    if path is None:
        return Rules()
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GateUnusable(f"cannot read the rules file {path}: {exc}") from None
    unknown = sorted(set(data) - {"defaults", "metrics"})
    if unknown:
        raise GateUnusable(f"{path}: unknown section(s) {', '.join(unknown)}; valid: defaults, metrics")
    defaults = _rule(data.get("defaults", {}), MetricRule(), f"{path} [defaults]")
    metrics = {name: _rule(table, defaults, f"{path} [metrics.{name}]")
               for name, table in data.get("metrics", {}).items()}
    return Rules(defaults, metrics)


@dataclass
class Check:
    baseline_system: str
    candidate_system: str
    metric: str
    value: str
    higher_is_better: bool
    rule: MetricRule
    test: dict[str, Any]
    failures: tuple[int, int]
    regressed: bool
    reason: str

    @property
    def pair(self) -> str:
        same = self.baseline_system == self.candidate_system
        return self.candidate_system if same else f"{self.baseline_system} -> {self.candidate_system}"


def _comparable(base: Any, cand: Any) -> None:
    bt, ct = base.summary["spec"]["task"], cand.summary["spec"]["task"]
    if (bt.get("name"), bt.get("version")) != (ct.get("name"), ct.get("version")):
        raise GateUnusable(f"different tasks: baseline {bt.get('name')} v{bt.get('version')}, candidate "
                           f"{ct.get('name')} v{ct.get('version')}")
    if base.summary["spec"].get("items_digest") != cand.summary["spec"].get("items_digest"):
        raise GateUnusable(f"task {bt.get('name')}: the two runs evaluated different items (items digest differs)")


def compare(baseline: Any, candidate: Any, rules: Rules, *, pairs: list[tuple[str, str]] | None = None,
            seed: int = 0) -> list[Check]:
    """Checks for every system pair and shared metric. GateUnusable when the runs cannot be compared."""
    from bench.results import primary_value
    from bench.stats import paired_worsening_test

    _comparable(baseline, candidate)
    if pairs is None:
        shared = [s for s in baseline.systems if s in candidate.systems]
        if not shared:
            raise GateUnusable(f"no system is in both runs (baseline: {', '.join(baseline.systems)}; candidate: "
                               f"{', '.join(candidate.systems)}); name a pair with --baseline-system and "
                               "--candidate-system")
        pairs = [(s, s) for s in shared]
    for b_sys, c_sys in pairs:
        if b_sys not in baseline.systems:
            raise GateUnusable(f"system '{b_sys}' is not in the baseline run ({', '.join(baseline.systems)})")
        if c_sys not in candidate.systems:
            raise GateUnusable(f"system '{c_sys}' is not in the candidate run ({', '.join(candidate.systems)})")
    b_eval, c_eval = baseline.summary["evaluators"], candidate.summary["evaluators"]
    metrics = [m for m in b_eval if m in c_eval]
    if not metrics:
        raise GateUnusable("the two runs share no metric")
    differing = [m for m in metrics if b_eval[m] != c_eval[m]]
    if differing:
        raise GateUnusable("evaluator revisions differ, so scores are not comparable: " + "; ".join(
            f"{m}: baseline {b_eval[m]!r}, candidate {c_eval[m]!r}" for m in differing))
    b_scores, c_scores = baseline.latest_scores(), candidate.latest_scores()
    checks = []
    for b_sys, c_sys in pairs:
        for metric in metrics:
            block = baseline.summary["systems"][b_sys]["metrics"].get(metric)
            if not block:
                continue
            value = primary_value(block)
            b_items = {i: r for (s, i, m), r in b_scores.items() if s == b_sys and m == metric}
            c_items = {i: r for (s, i, m), r in c_scores.items() if s == c_sys and m == metric}
            missing = sorted(set(b_items) - set(c_items))
            if missing:
                raise GateUnusable(f"{c_sys} / {metric}: {len(missing)} item(s) scored in the baseline are missing "
                                   f"from the candidate (first: {', '.join(missing[:5])}); finish the candidate run")
            b_values, c_values = baseline.item_values(b_sys, metric), candidate.item_values(c_sys, metric)
            shared = sorted(set(b_values) & set(c_values))
            paired_b, paired_c = [b_values[i] for i in shared], [c_values[i] for i in shared]
            rule = rules.for_metric(metric)
            higher = bool(block["higher_is_better"])
            test = paired_worsening_test(paired_b, paired_c, higher_is_better=higher, tolerance=rule.tolerance,
                                         seed=seed)
            failures = (sum(r["failure"] is not None for r in b_items.values()),
                        sum(r["failure"] is not None for r in c_items.values()))
            reasons = []
            if test["p_value"] is not None and test["p_value"] < rule.alpha:
                worse = -test["difference"] if higher else test["difference"]
                reasons.append(f"{metric}.{value} worse by {worse:.4g} (tolerance {rule.tolerance:g}; paired "
                               f"one-sided p = {test['p_value']:.4f} < alpha {rule.alpha:g}, n = {test['n']})")
            if failures[1] > failures[0] + rule.max_new_failures:
                reasons.append(f"{failures[1]} failed items against {failures[0]} in the baseline "
                               f"(allowed: {rule.max_new_failures} more)")
            checks.append(Check(b_sys, c_sys, metric, value, higher, rule, test, failures, bool(reasons),
                                "; ".join(reasons)))
    return checks


def environment_notes(baseline: Any, candidate: Any) -> list[str]:
    """What differs between the two runs' machines that can move scores with no change to a system:
    the CPU's instruction sets (they pick the int8 and bf16 kernels) and the tracked package versions.
    Said beside the verdict, not turned into one: the evaluator revisions already match."""
    b_env, c_env = baseline.summary.get("environment") or {}, candidate.summary.get("environment") or {}
    notes = []
    b_flags, c_flags = b_env.get("cpu_flags"), c_env.get("cpu_flags")
    if b_flags is not None and c_flags is not None and b_flags != c_flags:
        notes.append(f"the runs' CPUs differ in instruction sets (baseline: {' '.join(b_flags) or 'none listed'}; "
                     f"candidate: {' '.join(c_flags) or 'none listed'}): Whisper's int8 kernels and others differ "
                     "between them, so scores can move with no change to a system -> run the baseline on the "
                     "candidate's machine")
    elif (b_flags is None) != (c_flags is None):
        which = "baseline" if b_flags is None else "candidate"
        notes.append(f"the {which} run does not record its CPU's instruction sets (made before they were "
                     "recorded), so a CPU difference cannot be ruled out")
    b_packages, c_packages = b_env.get("packages") or {}, c_env.get("packages") or {}
    changed = [f"{name} {b_packages[name]} -> {c_packages[name]}" for name in sorted(set(b_packages) & set(c_packages))
               if b_packages[name] != c_packages[name]]
    if changed:
        notes.append("package versions differ: " + ", ".join(changed))
    return notes


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _rows(checks: list[Check]) -> list[list[str]]:
    return [[c.pair, f"{c.metric}.{c.value}{'^' if c.higher_is_better else 'v'}", _fmt(c.test["baseline"]),
             _fmt(c.test["candidate"]), _fmt(c.test["difference"]), f"{c.rule.tolerance:g}", _fmt(c.test["p_value"], 3),
             f"{c.failures[0]} -> {c.failures[1]}", "REGRESSION" if c.regressed else "pass"] for c in checks]


HEADER = ["system", "metric", "baseline", "candidate", "difference", "tolerance", "p", "failures", "verdict"]


def console(checks: list[Check], notes: list[str] = ()) -> str:
    rows = [HEADER, *_rows(checks)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for c in checks:
        if c.regressed:
            lines.append(f"REGRESSION {c.pair} {c.metric}: {c.reason}")
    lines.append("^ higher is better, v lower is better; difference = candidate - baseline")
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


def markdown(checks: list[Check], baseline: str, candidate: str, notes: list[str] = ()) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    verdict = "**regression**" if any(c.regressed for c in checks) else "**pass**"
    lines = [f"### bench gate: {verdict}", "", f"Baseline `{cell(baseline)}`, candidate `{cell(candidate)}`.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in _rows(checks)]
    bad = [c for c in checks if c.regressed]
    if bad:
        lines += [""] + [f"- {cell(c.pair)} {cell(c.metric)}: {cell(c.reason)}" for c in bad]
    if notes:
        lines += [""] + [f"> Note: {cell(note)}" for note in notes]
    return "\n".join(lines) + "\n"


def junit(checks: list[Check]) -> str:
    failures = sum(c.regressed for c in checks)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="bench-gate" tests="{len(checks)}" failures="{failures}" errors="0">']
    for c in checks:
        name = quoteattr(f"{c.pair} {c.metric}.{c.value}")
        out.append(f"  <testcase classname=\"bench.gate\" name={name}>")
        if c.regressed:
            out.append(f"    <failure message={quoteattr(c.reason)}>{xml_escape(c.reason)}</failure>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def unusable_junit(message: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="bench-gate" tests="1" failures="0" errors="1">\n'
            f'  <testcase classname="bench.gate" name="inputs">\n    <error message={quoteattr(message)}>'
            f"{xml_escape(message)}</error>\n  </testcase>\n</testsuite>\n")


def run_gate(baseline_path: Path, candidate_path: Path, *, rules_path: Path | None = None,
             baseline_system: str | None = None, candidate_system: str | None = None, seed: int = 0,
             markdown_path: Path | None = None, junit_path: Path | None = None) -> int:
    """The `bench gate` command: prints the verdict, writes the requested files, returns the exit status."""
    import sys

    from bench.jsonio import write_text_atomic
    from bench.results import load_run

    try:
        if (baseline_system is None) != (candidate_system is None):
            raise GateUnusable("--baseline-system and --candidate-system go together")
        rules = load_rules(rules_path)
        try:
            baseline, candidate = load_run(baseline_path), load_run(candidate_path)
        except BenchError as exc:
            raise GateUnusable(str(exc)) from None
        pairs = [(baseline_system, candidate_system)] if baseline_system else None
        checks = compare(baseline, candidate, rules, pairs=pairs, seed=seed)
        notes = environment_notes(baseline, candidate)
    except GateUnusable as exc:
        print(f"gate: cannot decide: {exc}", file=sys.stderr)
        if junit_path:
            write_text_atomic(junit_path, unusable_junit(str(exc)))
        if markdown_path:
            write_text_atomic(markdown_path, f"### bench gate: **cannot decide**\n\n{exc}\n")
        return UNUSABLE
    print(console(checks, notes))
    if markdown_path:
        write_text_atomic(markdown_path, markdown(checks, str(baseline_path), str(candidate_path), notes))
    if junit_path:
        write_text_atomic(junit_path, junit(checks))
    regressed = any(c.regressed for c in checks)
    print(f"\ngate: {'REGRESSION' if regressed else 'pass'} ({sum(c.regressed for c in checks)} of {len(checks)} "
          "checks regressed)")
    return REGRESSION if regressed else PASS
