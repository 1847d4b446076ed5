"""The `bench` command line. Imports stay light here: each command imports what it uses."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence


def _parse_options(pairs: Sequence[str], flag: str) -> dict[str, dict[str, Any]]:
    """['wer.model=whisper-tiny.en', 'flite.voice=slt'] -> {'wer': {'model': 'whisper-tiny.en'}, ...}"""
    from bench.errors import BenchError

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        name, dot, key = target.rpartition(".")
        if not sep or not dot or not name or not key:
            raise BenchError(f"{flag} expects NAME.KEY=VALUE, got '{pair}'")
        out.setdefault(name, {})[key] = _coerce(value)
    return out


def _coerce(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def _task_options(pairs: Sequence[str]) -> dict[str, Any]:
    from bench.errors import BenchError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--task-opt expects KEY=VALUE, got '{pair}'")
        out[key] = _coerce(value)
    return out


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (`bench tasks list`)")
    p.add_argument("--out", default="runs", type=Path, help="results root; the run folder is named by the spec hash")
    p.add_argument("--metrics", help="comma-separated metrics (default: the task's protocol)")
    p.add_argument("--limit", type=int, help="only the first N items (for a quick look; changes the spec)")
    p.add_argument("--batch-size", type=int, default=16, help="items per scoring batch (does not change numbers)")
    p.add_argument("--seed", type=int, default=0, help="seed for systems that sample and for bootstrap CIs")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the score cache")
    p.add_argument("--metric-opt", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="metric option, e.g. wer.model=whisper-tiny.en (repeatable)")
    p.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. root=/data/seedtts_testset (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary JSON instead of the table")
    _add_executor_arguments(p)
    _add_wandb_arguments(p)


def _add_executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the work runs: this machine (local) or a Ray cluster (ray; pip install -e '.[ray]'); "
                        "results are the same and a run resumes with either")
    p.add_argument("--ray-address", help="Ray cluster to join (e.g. auto, ray://head:10001; default: start a local "
                                         "Ray on this machine's cores)")
    p.add_argument("--ray-workers", type=int, help="Ray actors per system or evaluator (default: as many as the "
                                                    "cluster's CPUs hold)")
    p.add_argument("--ray-cpus-per-worker", type=float, help="CPUs (and math threads) each Ray actor takes, instead "
                                                             "of what its system or evaluator declares (default 1)")


def _executor(args: argparse.Namespace):
    from bench.executor import ExecutorOptions

    return ExecutorOptions(kind=args.executor, address=args.ray_address, workers=args.ray_workers,
                           cpus_per_worker=args.ray_cpus_per_worker)


def _add_wandb_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb", action="store_true",
                   help="log the finished results to Weights & Biases (offline without an API key; pip install wandb)")
    p.add_argument("--wandb-project", default="speechbench", help="wandb project (default: speechbench)")


def _plugin_commands() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="bench.commands")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Evaluate generative speech systems (and sparse-attention LLMs) with pinned evaluators.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run systems on a task, score, summarise (resumable)")
    run.add_argument("--systems", required=True, help="comma-separated system names (`bench systems list`)")
    _add_run_arguments(run)
    run.add_argument("--timeout", type=float, default=300.0, help="seconds per item before a system is killed")
    run.add_argument("--load-timeout", type=float, default=600.0,
                     help="seconds a system may take to load; past it, all its items fail with reason load_timeout")
    run.add_argument("--system-opt", action="append", default=[], metavar="SYSTEM.KEY=VALUE",
                     help="system option, e.g. espeak-ng.voice=en-gb (repeatable)")
    run.add_argument("--retry-failed", action="store_true", help="on resume, generate and score failed items again")
    run.add_argument("--no-warmup", action="store_true",
                     help="skip the untimed warm-up (the first words of the first item, per system) before timing")

    score = sub.add_parser("score", help="score a folder of already generated audio (files named <item id>.wav)")
    score.add_argument("--audio-dir", required=True, type=Path, help="folder of <item id>.wav files")
    score.add_argument("--name", help="name for this system in results (default: the folder name)")
    score.add_argument("--retry-failed", action="store_true",
                       help="on resume, score failed items again (files added, changed or removed since are "
                            "always scored again)")
    _add_run_arguments(score)

    for kind in ("system", "task", "metric"):
        p = sub.add_parser(f"{kind}s", help=f"registered {kind}s")
        p.add_argument("action", choices=["list"], nargs="?", default="list")
        p.add_argument("--json", action="store_true")

    sweep = sub.add_parser("sweep", help="sparse attention: models x methods x compressions x tasks x lengths x phases")
    sweep.add_argument("--models", required=True, help="comma-separated LM systems, e.g. tiny-llama-xs,tiny-llama-s")
    sweep.add_argument("--tasks", required=True, help="comma-separated LM tasks, e.g. niah-single,variable-tracking")
    sweep.add_argument("--lengths", required=True, help="comma-separated prompt lengths in tokens, e.g. 512,1024")
    sweep.add_argument("--prefill-methods", default="vertical-slash,flexprefill,block-sparse",
                       help="comma-separated prefill methods ('' for none)")
    sweep.add_argument("--decode-methods", default="snapkv,ada-snapkv,quest",
                       help="comma-separated decode methods ('' for none)")
    sweep.add_argument("--compressions", default="1.43,2,3.33,5,10,20",
                       help="compression ratios C = 1/(1 - sparsity), each > 1 (dense runs always)")
    sweep.add_argument("--samples", type=int, default=20, help="samples per (task, length)")
    sweep.add_argument("--model-opt", action="append", default=[], metavar="MODEL.KEY=VALUE",
                       help="model option, e.g. tiny-llama-s.checkpoint=/path (repeatable)")
    sweep.add_argument("--task-opt", action="append", default=[], metavar="TASK.KEY=VALUE",
                       help="task generator option, e.g. niah-multikey.haystack=noise (repeatable)")
    sweep.add_argument("--method-opt", action="append", default=[], metavar="METHOD.KEY=VALUE",
                       help="attention method option, e.g. block-sparse.block=16 (repeatable; "
                            "the budget itself comes from --compressions)")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--mode", choices=["teacher-forced", "generate"], default="teacher-forced")
    sweep.add_argument("--out", type=Path, default=Path("runs"))
    sweep.add_argument("--timeout", type=float, default=900.0, help="seconds per evaluation before the model is killed")
    sweep.add_argument("--jobs", type=int, default=1,
                       help="models evaluated at once, started in the order given (list the largest first); "
                            "each worker gets cores/jobs threads; records do not change")
    sweep.add_argument("--margin", type=float, default=0.10, help="non-inferiority margin for safe sparsity")
    sweep.add_argument("--no-analysis", action="store_true", help="only run; analyse later with `bench fit`")
    sweep.add_argument("--no-progress", action="store_true")
    _add_executor_arguments(sweep)
    _add_wandb_arguments(sweep)

    fit = sub.add_parser("fit", help="analyse a sweep folder (frontier, safe sparsity, scaling law) or fit "
                                     "a Chinchilla law to a CSV of params,tokens,loss")
    fit.add_argument("path", type=Path, help="a sweep folder, or a CSV file with --chinchilla")
    fit.add_argument("--chinchilla", action="store_true", help="fit L(N, D) = E + A/N^a + B/D^b to the CSV")
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for Chinchilla CIs")
    fit.add_argument("--margin", type=float, default=0.10, help="non-inferiority margin for safe sparsity")
    fit.add_argument("--alpha", type=float, default=0.05)
    fit.add_argument("--correction", choices=["holm", "none"], default="holm")

    report = sub.add_parser("report", help="an HTML page comparing the systems of one or more runs of a task")
    report.add_argument("run_folders", type=Path, nargs="+", help="run folders (or their summary.json) of one task")
    report.add_argument("--format", default="html", help="report builder (entry point group bench.reports)")
    report.add_argument("--out", type=Path, help="output file (default: <run folder>/report.html for one run, "
                                                 "./report.html for several)")
    report.add_argument("--embed-audio", action="store_true",
                        help="embed the audio in the page (default: relative links to the run folders)")

    gate = sub.add_parser("gate", help="CI gate: does a candidate run regress against a baseline run? "
                                       "(exit 0 pass, 1 regression, 2 cannot decide)")
    gate.add_argument("--baseline", required=True, type=Path, help="baseline run folder (or its summary.json)")
    gate.add_argument("--candidate", required=True, type=Path, help="candidate run folder (or its summary.json)")
    gate.add_argument("--rules", type=Path, help="TOML rules: per-metric tolerance, alpha, max_new_failures "
                                                 "(see bench/gate.py)")
    gate.add_argument("--baseline-system", help="compare this baseline system ...")
    gate.add_argument("--candidate-system", help="... with this candidate system (default: systems by name)")
    gate.add_argument("--seed", type=int, default=0, help="seed of the permutation test")
    gate.add_argument("--markdown", type=Path, help="also write the verdict as Markdown (a pull-request comment)")
    gate.add_argument("--junit", type=Path, help="also write JUnit XML (CI test reports)")

    # Plug-in commands (entry point group bench.commands), e.g. train-lm from systems/lm.
    for name, value in sorted(_plugin_commands().items()):
        sub.add_parser(name, help=f"plug-in command ({value}); `bench {name} --help`", add_help=False)

    models = sub.add_parser("models", help="evaluator weights: list, verify, install")
    models.add_argument("action", choices=["list", "verify", "install"])
    models.add_argument("names", nargs="*", help="model names (default: all)")
    models.add_argument("--online", action="store_true", help="install from the hub at the pinned revision")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _plugin_commands():
        # A plug-in command parses its own arguments (--help included).
        from bench import registry
        from bench.errors import BenchError

        try:
            return int(registry.get_class("command", argv[0])(argv[1:]) or 0)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from bench.errors import BenchError

    try:
        if args.command in ("run", "score"):
            return _cmd_run(args)
        if args.command in ("systems", "tasks", "metrics"):
            return _cmd_list(args.command[:-1], args.json)
        if args.command == "models":
            return _cmd_models(args)
        if args.command == "report":
            from bench import registry

            print(registry.get_class("report", args.format)(args.run_folders, args.out, embed_audio=args.embed_audio))
            return 0
        if args.command == "gate":
            from bench.gate import run_gate

            return run_gate(args.baseline, args.candidate, rules_path=args.rules, seed=args.seed,
                            baseline_system=args.baseline_system, candidate_system=args.candidate_system,
                            markdown_path=args.markdown, junit_path=args.junit)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "fit":
            return _cmd_fit(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished items are saved; run the same command again to resume", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.errors import BenchError
    from bench.jsonio import dumps
    from bench.registry import parse_names
    from bench.runner import AUDIO_DIR_SYSTEM_PREFIX, Run, RunOptions
    from bench.summary import console_table

    opts = RunOptions(
        out_root=args.out, seed=args.seed, batch_size=args.batch_size, limit=args.limit,
        use_cache=not args.no_cache, progress=not args.no_progress,
        metric_names=parse_names(args.metrics) if args.metrics else None,
        metric_options=_parse_options(args.metric_opt, "--metric-opt"),
        task_options=_task_options(args.task_opt), executor=_executor(args),
    )
    if args.command == "run":
        systems = parse_names(args.systems)
        opts.timeout_s = args.timeout
        opts.load_timeout_s = args.load_timeout
        opts.retry_failed = args.retry_failed
        opts.warmup = not args.no_warmup
        opts.system_options = _parse_options(args.system_opt, "--system-opt")
        stray = sorted(set(opts.system_options) - set(systems))
        if stray:
            raise BenchError(f"--system-opt names {', '.join(stray)}, which --systems does not list "
                             f"({', '.join(systems)}); a variant is listed as NAME@LABEL in --systems too")
    else:
        if not args.audio_dir.is_dir():
            raise BenchError(f"--audio-dir {args.audio_dir} is not a folder")
        opts.audio_dir = args.audio_dir
        opts.retry_failed = args.retry_failed
        systems = [AUDIO_DIR_SYSTEM_PREFIX + (args.name or args.audio_dir.resolve().name)]
    run = Run(systems, args.task, opts)
    print(f"run folder: {run.folder}", file=sys.stderr)
    summary = run.execute()
    unmatched = summary.get("unmatched_audio_files", {})
    if unmatched.get("count"):
        print(f"warning: {unmatched['count']} file(s) in {opts.audio_dir} match no item of the task and were not "
              f"scored: {', '.join(unmatched['first'])}{' ...' if unmatched['count'] > len(unmatched['first']) else ''}",
              file=sys.stderr)
    if args.json:
        print(dumps(summary, indent=2))
    else:
        print(console_table(summary))
        print(f"\nsummary: {run.folder / 'summary.json'}")
    if args.wandb:
        from bench.wandb_log import log

        log("run", run.folder, args.wandb_project)
    return 0


def _floats(csv: str, flag: str) -> tuple[float, ...]:
    import math

    from bench.errors import BenchError

    try:
        values = tuple(float(x) for x in csv.split(",") if x.strip())
    except ValueError:
        raise BenchError(f"{flag} expects comma-separated numbers, got '{csv}'") from None
    if not all(math.isfinite(v) for v in values):
        raise BenchError(f"{flag} expects finite numbers, got '{csv}'")
    return values


def _ints(csv: str, flag: str) -> tuple[int, ...]:
    from bench.errors import BenchError

    values = _floats(csv, flag)
    if any(v != int(v) for v in values):
        raise BenchError(f"{flag} expects whole numbers, got '{csv}'")
    return tuple(int(v) for v in values)


def sweep_spec(args: argparse.Namespace) -> Any:
    """The SweepSpec that `bench sweep` with these arguments evaluates (validated)."""
    from bench.registry import parse_names
    from bench.sweep import grid_from_names, validate_grid

    model_options = _parse_options(args.model_opt, "--model-opt")
    spec = grid_from_names(
        parse_names(args.models), model_options=model_options, tasks=tuple(parse_names(args.tasks)),
        lengths=_ints(args.lengths, "--lengths"),
        prefill_methods=tuple(parse_names(args.prefill_methods)),
        decode_methods=tuple(parse_names(args.decode_methods)),
        compressions=_floats(args.compressions, "--compressions"), n_samples=args.samples, seed=args.seed,
        mode=args.mode, task_options=_parse_options(args.task_opt, "--task-opt"),
        method_options=_parse_options(args.method_opt, "--method-opt"))
    validate_grid(spec)  # before naming a folder the sweep would not create
    return spec


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bench.sweep import Sweep

    sweep = Sweep(sweep_spec(args), args.out, timeout_s=args.timeout, progress=not args.no_progress,
                  model_options=_parse_options(args.model_opt, "--model-opt"), jobs=args.jobs,
                  executor=_executor(args))
    print(f"sweep folder: {sweep.folder}", file=sys.stderr)
    folder = sweep.run()
    if not args.no_analysis:
        from bench.sparse.report import analyse

        analyse(folder, margin=args.margin)
        print((folder / "analysis" / "report.txt").read_text())
    print(f"records: {folder / 'records.jsonl'}")
    if args.wandb:
        from bench.wandb_log import log

        log("sweep", folder, args.wandb_project)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from bench.errors import BenchError
    from bench.jsonio import dumps

    if args.chinchilla:
        import csv

        from bench.sparse.scaling import fit_chinchilla

        if not args.path.is_file():
            raise BenchError(f"{args.path} is not a file")
        with open(args.path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        try:
            n, d, loss = ([float(r[k]) for r in rows] for k in ("params", "tokens", "loss"))
        except (KeyError, ValueError) as exc:
            raise BenchError(f"{args.path}: needs numeric columns params,tokens,loss ({exc})") from None
        print(dumps(fit_chinchilla(n, d, loss, bootstrap=args.bootstrap), indent=2))
        return 0
    from bench.sparse.report import analyse

    analyse(args.path, margin=args.margin, alpha=args.alpha, correction=args.correction)
    print((args.path / "analysis" / "report.txt").read_text())
    print(f"analysis: {args.path / 'analysis'}")
    return 0


def _cmd_list(kind: str, as_json: bool) -> int:
    from bench import registry
    from bench.jsonio import dumps

    rows = []
    for name in registry.names(kind):
        try:
            cls = registry.get_class(kind, name)
            avail = cls.availability()
            desc = getattr(cls, "description", "") or (cls.__doc__ or "").strip().split("\n")[0]
            extra = {"family": getattr(cls, "family", "")} if kind == "system" else {}
            rows.append({"name": name, "available": avail.ok, "why": avail.reason, "fix": avail.how_to_fix,
                         "description": desc, **extra})
        except Exception as exc:  # a broken plug-in is listed with its error, not hidden
            rows.append({"name": name, "available": False, "why": f"failed to import: {exc}",
                         "fix": "reinstall the package that provides it", "description": ""})
    if as_json:
        print(dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "ok " if r["available"] else "no "
        fam = f"[{r['family']}] " if r.get("family") else ""
        print(f"{state} {r['name'].ljust(width)}  {fam}{r['description']}")
        if not r["available"]:
            print(f"    {' ' * width}  unavailable: {r['why']}" + (f"\n    {' ' * width}  to fix: {r['fix']}" if r["fix"] else ""))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from bench.evaluators import all_models
    from bench.errors import BenchError, UnknownName

    models = all_models()
    names = args.names or sorted(models)
    for n in names:
        if n not in models:
            raise UnknownName(f"unknown evaluator model '{n}'; known: {', '.join(sorted(models))}")
    status = 0
    for n in names:
        model, used_by = models[n]
        if args.action == "list":
            state, detail = model.check(full=False)
            src = "offline+online" if model.offline_packages and model.hub_id else (
                "offline" if model.offline_packages else "online" if model.hub_id else "local only")
            print(f"{n}: {state} ({src}; used by {', '.join(used_by)}; licence {model.license})")
            print(f"    {model.description}")
            if state != "ok":
                print(f"    to get it: {model.how_to_get()}")
        elif args.action == "verify":
            state, detail = model.check()
            print(f"{n}: {state}: {detail}")
            status |= state != "ok"
        else:
            try:
                folder = model.install_online() if args.online else model.install_offline()
                print(f"{n}: installed and verified in {folder}")
            except BenchError as exc:
                print(f"{n}: not installed: {exc}", file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
