"""The extension registries (docs/extending.md): the schema's enums and the CLI's choices name what
is registered, registering imports nothing heavy, and a toy backend, suite and rule registered the
way the guide shows are used by the stages."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vegtts.analysis.rules import RULES, Pick, RankBy, SelectionRule, UnitSamples
from vegtts.analysis.selection import aggregate_selection, select_all
from vegtts.cli import build_parser
from vegtts.config import load_schema, validate_config
from vegtts.plan import sampling_identity, sampling_runtime
from vegtts.sampling.backends import BACKENDS, Generated, GenerationRequest, SamplingBackend
from vegtts.sampling.conversion import Generation
from vegtts.tasks import list_task_ids, load_tasks, resolve_tasks_to_json
from vegtts.tasks.suites import SUITES, TaskSuite
from vegtts.tasks.suites.base import packaged_problems

REPO = Path(__file__).resolve().parents[1]


def schema_enum(*path: str) -> list[str]:
    node = load_schema()
    for key in path:
        node = node["properties"][key]
    return node["enum"]


def cli_choices(*command: str, option: str) -> list[str]:
    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return list(next(a for a in parser._actions if option in a.option_strings).choices)


# ---------------------------------------------------------------- schema and CLI name the registries


def test_schema_enums_are_the_registered_names():
    assert sorted(schema_enum("sampling", "backend")) == sorted(BACKENDS.names())
    assert sorted(schema_enum("tasks", "suite")) == sorted(SUITES.names())


def test_cli_choices_are_the_registered_names():
    assert cli_choices("tasks", "list", option="--suite") == list(SUITES.names())
    assert cli_choices("ttt", "score", option="--backend") == [b.name for b in BACKENDS if b.scores]
    assert set(cli_choices("ttt", "score", option="--backend")) == {"transformers", "vllm"}


def test_every_builtin_rule_is_defined_and_styled():
    from vegtts.analysis.definitions import DEFINITIONS
    from vegtts.plots import RULE_STYLE

    for rule in RULES:
        assert DEFINITIONS[f"rule.{rule.name}"] == rule.definition and "\n" not in rule.definition
        assert RULE_STYLE[rule.name] == {"color": rule.color, "marker": rule.marker, "label": rule.label}


def test_registering_imports_no_model_library():
    """Snakemake imports vegtts to list tasks and plan keys while it parses the workflow."""
    code = ("import sys, vegtts.plan, vegtts.tasks, vegtts.cli, vegtts.analysis.rules, vegtts.sampling.backends; "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_a_name_registered_twice_or_unknown_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        BACKENDS.register(BACKENDS["vllm"])
    with pytest.raises(ValueError, match="config key 'sampling.backend': unknown sampling backend 'nope'"):
        BACKENDS["nope"]


# ---------------------------------------------------------------- backends: identity keys from the registry


def test_only_the_chosen_backends_identity_keys_enter_the_sample_key():
    sampling = validate_config({"sampling": {"backend": "openai", "openai": {"model": "m", "base_url": "http://h:1/v1"}}})["sampling"]
    ident = sampling_identity(sampling)
    assert set(ident["openai"]) == set(BACKENDS["openai"].identity_keys) and "vllm" not in ident
    assert "base_url" not in ident["openai"] and sampling_runtime(sampling)["openai"]["base_url"] == "http://h:1/v1"
    with pytest.raises(ValueError, match="sampling.openai.model' is required"):
        sampling_identity({**sampling, "openai": {}})


# ---------------------------------------------------------------- the worked examples of docs/extending.md


class CharTokenizer:
    all_special_ids: list[int] = []
    bos_token = None

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def __call__(self, text, return_tensors=None, add_special_tokens=True):
        import torch

        return {"input_ids": torch.tensor([[ord(c) for c in text]])}


def echo_generate(request: GenerationRequest) -> Generated:
    """The guide's toy backend: every sample is the same line of code."""
    text = "    return torch.relu(x)\n"
    gens = [Generation(text=text, token_logprobs=[-0.5] * len(text), token_texts=list(text), finish_reason="stop")
            for _ in range(request.settings.k)]
    request.progress.update(len(gens))
    return Generated(gens, {"name": "echo", "model": "echo"})


def test_a_registered_backend_samples_through_the_stage(tmp_path, monkeypatch):
    import vegtts.sampling.stage as stage

    monkeypatch.setitem(BACKENDS._entries, "echo", SamplingBackend("echo", generate=echo_generate))
    tasks = tmp_path / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": ["relu"]}, tasks, validate=False)
    out = stage.sample_with_backend("echo", tasks, "relu", {"k": 3, "seed": 0}, {}, "unused", tmp_path / "s.parquet",
                                    tokenizer=CharTokenizer())
    df = pd.read_parquet(out)
    assert len(df) == 3 and set(df["model_id"]) == {"echo:echo"} and df["code"].str.contains("torch.relu").all()
    assert sampling_identity({"backend": "echo", "k": 3}) == {"backend": "echo", "k": 3}


def test_a_registered_suite_lists_and_loads_its_problems(tmp_path, monkeypatch):
    (tmp_path / "twice_relu.py").write_text((REPO / "src/vegtts/tasks/builtin/relu_twice.py").read_text())
    suite = TaskSuite("toy", lambda suite_cfg: packaged_problems(tmp_path))
    monkeypatch.setitem(SUITES._entries, "toy", suite)
    assert list_task_ids({"suite": "toy"}) == ["twice_relu"]
    (spec,) = load_tasks({"suite": "toy", "ids": ["twice_relu"]})
    assert spec.suite == "toy" and "forward" in spec.source


def lowest_index(unit: UnitSamples, variant: str) -> Pick:
    """The guide's toy rule: the correct sample with the smallest sample_idx."""
    ok = np.flatnonzero(unit.correct)
    if ok.size == 0:
        return Pick(-1, 0.0, 0.0, float(np.log(1e-3)), 0, unit.n)
    best = ok[np.argmin(unit.sample_idx[ok])]
    s = float(unit.speedup[best])
    checked = int((unit.sample_idx <= unit.sample_idx[best]).sum())  # samples checked in sample_idx order
    return Pick(int(unit.sample_idx[best]), float(unit.fast_1[best]), s, float(np.log(max(s, 1e-3))), 1, checked)


def test_a_registered_rule_appears_in_the_tables_after_the_builtin_ones(monkeypatch):
    rule = SelectionRule("first_correct", "control", "control: the correct sample with the smallest sample_idx",
                         "first correct", "#444444", "o", lowest_index)
    monkeypatch.setitem(RULES._entries, rule.name, rule)
    samples = pd.DataFrame({
        "policy": "base", "seed": 0, "task_id": ["a"] * 3 + ["b"] * 3, "sample_idx": [2, 0, 1] * 2,
        "correct": [True, True, False, False, True, True], "speedup": [2.0, 0.5, 0.0, 0.0, 1.5, 3.0],
        "has_code": True, "n_code_tokens": [4, 5, 6] * 2, "n_tokens": [8, 9, 10] * 2,
        **{f"{c}_{v}": [1.0, 2.0, 3.0] * 2 for c in ("nll", "tail_nll") for v in ("mean_code", "sum_code", "mean_all", "sum_all")},
    })
    samples["fast_1"] = samples["correct"] & (samples["speedup"] > 1)
    per_unit = select_all(samples)
    mine = per_unit[per_unit["rule"] == "first_correct"].set_index("task_id")
    assert mine.loc["a", "selected_sample_idx"] == 0 and mine.loc["b", "selected_sample_idx"] == 0
    assert mine["success"].tolist() == [0.0, 1.0] and mine["n_evaluated"].tolist() == [1, 1]
    assert per_unit.groupby("task_id")["rule"].last().eq("first_correct").all()  # registration order = display order
    table = aggregate_selection(per_unit, n_boot=50)
    assert table[table["rule"] == "first_correct"]["success_rate"].item() == pytest.approx(0.5)


def test_rank_rules_are_described_by_their_ranking():
    assert RULES["surprisal_top3"].select == RankBy("nll", descending=True, top=3) and RULES["surprisal_top3"].per_variant
    assert RULES.names()[:3] == ("oracle", "surprisal_top3", "surprisal")


GUIDE_CHECK = """
import re, sys
from pathlib import Path
import numpy as np, pandas as pd
guide = Path(sys.argv[1]).read_text(encoding="utf-8")
modules = [b for b in re.findall(r"```python\\n(.*?)```", guide, re.S) if ".register(" in b]
assert len(modules) == 3, len(modules)
for i, source in enumerate(modules):
    exec(compile(source, f"docs/extending.md example {i}", "exec"), {"__name__": f"example{i}"})
from vegtts.analysis.rules import RULES
from vegtts.analysis.selection import select_all
from vegtts.plan import sampling_identity
from vegtts.tasks import list_task_ids
try:
    sampling_identity({"backend": "echo", "echo": {}})
    raise SystemExit("the echo backend's settings check did not fire")
except ValueError as e:
    assert "sampling.echo.line" in str(e)
assert sampling_identity({"backend": "echo", "echo": {"line": "x", "port": 1}})["echo"] == {"line": "x"}
assert list_task_ids({"suite": "mine", "path": sys.argv[2]}) == ["relu_twice"]
unit = pd.DataFrame({"policy": "base", "seed": 0, "task_id": "a", "sample_idx": [1, 0], "correct": [True, True],
                     "speedup": [2.0, 3.0], "fast_1": [True, True], "n_code_tokens": [3, 4], "n_tokens": [5, 6],
                     **{f"{c}_{v}": [1.0, 2.0] for c in ("nll", "tail_nll")
                        for v in ("mean_code", "sum_code", "mean_all", "sum_all")}})
picked = select_all(unit).set_index("rule").loc["first_correct"]
assert RULES.names()[-1] == "first_correct" and picked["selected_sample_idx"] == 0 and picked["n_evaluated"] == 1
print("ok")
"""


def test_the_guides_worked_examples_register_and_are_used(tmp_path):
    """The three modules docs/extending.md shows, run as written (in a fresh process: registering is for good)."""
    (tmp_path / "relu_twice.py").write_text((REPO / "src/vegtts/tasks/builtin/relu_twice.py").read_text())
    out = subprocess.run([sys.executable, "-c", GUIDE_CHECK, str(REPO / "docs/extending.md"), str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
