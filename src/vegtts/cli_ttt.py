"""`vegtts ttt ...`: one TTT update, teacher-forced scoring, and the TTT tables and figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_common import add_command, json_arg, verified
from .outputs import FIGURE_FORMATS, TTT_FIGURES, TTT_TABLES, folder_of
from .sampling.backends import BACKENDS


def cmd_ttt_update(args: argparse.Namespace) -> int:
    import torch

    from .models import ensure_model
    from .ttt import run_ttt_update

    torch.set_num_threads(args.threads)
    verified(*args.samples, *args.evaluations, args.previous)
    ensure_model(args.model)
    run_ttt_update(args.samples, args.evaluations, args.model, Path(args.out), args.settings,
                   previous_adapter=args.previous or None, step=args.step)
    return 0


def cmd_ttt_score(args: argparse.Namespace) -> int:
    import torch

    from .models import ensure_model
    from .scoring import run_scoring

    torch.set_num_threads(args.threads)
    verified(*args.samples, args.adapter)
    ensure_model(args.model)
    run_scoring(args.samples, args.model, args.adapter or None, args.scorer, Path(args.out), micro_batch=args.micro_batch,
                backend=args.backend, vllm_settings=args.vllm_settings)
    return 0


def cmd_ttt_analyze(args: argparse.Namespace) -> int:
    from .analysis.provenance import run_provenance
    from .analysis.ttt import run_ttt_analysis
    from .io import provenance, read_json
    from .plan import ttt_manifest_files

    manifest = read_json(args.manifest)
    verified(*ttt_manifest_files(manifest))
    prov = run_provenance(provenance(), args.config_hash, args.store_keys, args.config_hash_scope)
    run_ttt_analysis(manifest, prov, folder_of(args.out, TTT_TABLES.values()), variant=args.settings["variant"],
                     n_boot=int(args.settings["bootstrap"]), seed=int(args.settings["seed"]))
    return 0


def cmd_ttt_figures(args: argparse.Namespace) -> int:
    from .plots import make_ttt_figures

    figures = [f"{stem}.{fmt}" for stem in TTT_FIGURES for fmt in FIGURE_FORMATS]
    make_ttt_figures(folder_of(args.tables, TTT_TABLES.values()), folder_of(args.out, figures))
    return 0


def add_ttt_parsers(sub: Any) -> None:
    ttt = sub.add_parser("ttt", help="test-time training").add_subparsers(dest="action", required=True)
    p = add_command(ttt, "update", cmd_ttt_update, "one TTT step: update a LoRA adapter on evaluated samples, save it")
    p.add_argument("--samples", nargs="+", required=True, help="sample parquets of the previous step's train batch")
    p.add_argument("--evaluations", nargs="+", required=True, help="their evaluation parquets")
    p.add_argument("--model", required=True, help="base model folder or hub id")
    p.add_argument("--previous", default="", help="the previous step's adapter folder (none at step 1)")
    p.add_argument("--step", type=int, required=True, help="step number (1 = first update from the base model)")
    p.add_argument("--settings", type=json_arg, required=True, help="vegtts.ttt.TTTSettings fields as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="adapter folder to write (atomically)")
    p = add_command(ttt, "score", cmd_ttt_score, "teacher-forced log-probs of stored samples under a policy")
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", default="", help="LoRA adapter folder (none = the base policy)")
    p.add_argument("--scorer", required=True, help="name of the scoring policy stored with the scores")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="transformers", choices=[b.name for b in BACKENDS if b.scores],
                   help="transformers (the model in this process) or vllm (vLLM prompt log-probs)")
    p.add_argument("--vllm-settings", type=json_arg, default=None, help="sampling.vllm settings as JSON (backend vllm)")
    p.add_argument("--out", required=True)
    p = add_command(ttt, "analyze", cmd_ttt_analyze, "TTT tables: trajectory, selection, probe, compute, equal budget")
    p.add_argument("--manifest", required=True,
                   help="the TTT manifest (vegtts.plan.Plan.ttt_manifest as JSON): every artifact, by seed, step and batch")
    p.add_argument("--settings", type=json_arg, required=True,
                   help='analysis settings as JSON: {"variant": ..., "bootstrap": ..., "seed": ...}')
    p.add_argument("--config-hash", default="", help="hash of the experiment config (written into every table)")
    p.add_argument("--config-hash-scope", default="", help="which config keys the hash covers (written next to it)")
    p.add_argument("--store-keys", type=json_arg, default={}, help="store keys of the inputs as JSON (written into every table)")
    p.add_argument("--out", nargs="+", required=True, help="the TTT tables to write, in one folder")
    p = add_command(ttt, "figures", cmd_ttt_figures, "TTT trajectory and probe figures from the TTT tables")
    p.add_argument("--tables", nargs="+", required=True, help="the TTT tables")
    p.add_argument("--out", nargs="+", required=True, help="the figure files to write, in one folder (PNG and PDF of each)")
