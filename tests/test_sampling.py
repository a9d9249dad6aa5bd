"""Prompts and the transformers sampling backend."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vegtts.sampling.prompts import MAX_SHOTS, build_prompt, prompt_sha, reference_text
from vegtts.sampling.transformers_backend import SamplerSettings, batch_seed, generate_batch, sample_task
from vegtts.tasks import load_tasks

REPO = Path(__file__).resolve().parents[1]


def _spec(task_id: str = "leaky_relu_where"):
    return load_tasks({"suite": "builtin", "ids": [task_id]})[0]


# ---------------------------------------------------------------- prompts


def test_body_prompt_contains_reference_and_ends_in_open_fence():
    spec = _spec()
    prompt = build_prompt(spec, "body", "completion", 3)
    assert "return torch.where(x > 0, x, self.negative_slope * x)" in prompt
    assert "class Model(nn.Module)" in prompt
    assert prompt.endswith("## ModelNew.forward body\n```python\n")
    assert prompt.count("## ModelNew.forward body") == 4  # 3 shots + the task


def test_full_reference_is_the_whole_source():
    spec = _spec()
    assert spec.source.strip() in build_prompt(spec, "body", "completion", 0, reference="full")
    code = reference_text(spec, "code")
    assert "get_inputs" not in code and "TAGS" not in code and '"""' not in code
    assert "self.negative_slope * x" in code


def test_module_prompt_shows_complete_modules():
    prompt = build_prompt(_spec(), "module", "completion", 2)
    assert prompt.count("class ModelNew(nn.Module)") == 2
    assert prompt.endswith("## ModelNew\n```python\n")


def test_prompt_sha_changes_with_prompt_text():
    spec = _spec()
    shas = {prompt_sha(build_prompt(spec, "body", "completion", n)) for n in range(MAX_SHOTS + 1)}
    assert len(shas) == MAX_SHOTS + 1
    assert prompt_sha(build_prompt(spec, "body", "completion", 2)) != prompt_sha(
        build_prompt(spec, "module", "completion", 2)
    )


def test_bad_prompt_settings_name_the_key():
    spec = _spec()
    with pytest.raises(ValueError, match="prompt.format"):
        build_prompt(spec, "diff", "completion", 1)
    with pytest.raises(ValueError, match="prompt.n_shots"):
        build_prompt(spec, "body", "completion", MAX_SHOTS + 1)
    with pytest.raises(ValueError, match="chat template"):
        build_prompt(spec, "body", "chat", 1, tokenizer=SimpleNamespace(chat_template=None))


def test_chat_style_uses_the_template():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<user>" + messages[0]["content"] + "<assistant>"

    prompt = build_prompt(_spec(), "body", "chat", 1, tokenizer=Tok())
    assert prompt.startswith("<user>") and prompt.endswith("<assistant>```python\n")


# ---------------------------------------------------------------- decode loop on a scripted model


class CharTokenizer:
    """Token id = code point; id 1 is EOS."""

    eos_token_id = 1
    bos_token = None

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 1)


class ScriptedCache:
    def __init__(self):
        self.rows = None

    def batch_repeat_interleave(self, n):
        self.rows = list(range(n))

    def batch_select_indices(self, idx):
        self.rows = [self.rows[int(i)] for i in idx]


class ScriptedLM:
    """Row r emits scripts[r] one character at a time (greedy), then EOS."""

    device = torch.device("cpu")
    generation_config = SimpleNamespace(eos_token_id=1)

    def __init__(self, scripts):
        self.scripts = scripts
        self.step = 0

    def __call__(self, input_ids, cache=None, use_cache=True, logits_to_keep=None):
        if cache is None:
            cache, self.step = ScriptedCache(), 0
            rows = [0]
        else:
            self.step += 1
            rows = cache.rows
        logits = torch.full((len(rows), 1, 200), -10.0)
        for i, r in enumerate(rows):
            script = self.scripts[r]
            tok = ord(script[self.step]) if self.step < len(script) else 1
            logits[i, 0, tok] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=cache)


def test_stop_string_truncates_text_and_tokens():
    # The prompt is prefilled once, so every row's first token comes from the same logits.
    lm = ScriptedLM(["return x\n```\nmore", "return y", "r = 1\n## next"])
    out = generate_batch(lm, CharTokenizer(), torch.tensor([[5]]), 3, 0.0, 1.0, 30, ["```", "\n## "])
    assert [o.text for o in out] == ["return x\n", "return y", "r = 1"]
    assert [o.finish_reason for o in out] == ["stop", "stop", "stop"]  # the second ended with EOS
    assert CharTokenizer().decode(out[0].token_ids) == "return x\n"
    assert len(out[0].token_logprobs) == len(out[0].token_ids)


def test_length_finish_reason_when_budget_runs_out():
    lm = ScriptedLM(["return torch.relu(x)"])
    out = generate_batch(lm, CharTokenizer(), torch.tensor([[5]]), 1, 0.0, 1.0, 6, ["```"])
    assert out[0].text == "return" and out[0].finish_reason == "length"


def test_drop_finished_gives_the_same_samples_as_keeping_rows():
    scripts = ["ab```", "abcdefgh", "a```"]
    kept = generate_batch(ScriptedLM(scripts), CharTokenizer(), torch.tensor([[5]]), 3, 0.0, 1.0, 12, ["```"], False)
    dropped = generate_batch(ScriptedLM(scripts), CharTokenizer(), torch.tensor([[5]]), 3, 0.0, 1.0, 12, ["```"], True)
    assert [(o.text, o.token_ids) for o in kept] == [(o.text, o.token_ids) for o in dropped]


def test_batch_seed_is_stable_and_distinct():
    assert batch_seed(0, "relu", 0) == batch_seed(0, "relu", 0)
    assert len({batch_seed(s, t, b) for s in (0, 1) for t in ("a", "b") for b in (0, 1)}) == 8
    assert 0 <= batch_seed(123, "relu", 7) < 2**63


def test_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown sampling settings"):
        SamplerSettings.from_dict({"k": 2, "temp": 0.5})


# ---------------------------------------------------------------- the real model (slow)


def _model_dir() -> Path:
    """The default model, prepared into the checkout's resources/ on first use (~1 min), as the workflow does."""
    from vegtts.models import prepare_default_model

    return prepare_default_model(REPO / "resources" / "models" / "gemma3-270m-gguf")


@pytest.fixture(scope="module")
def real_model():
    from vegtts.models import load_model_and_tokenizer

    return load_model_and_tokenizer(_model_dir())


def _short_settings(**kw):
    base = dict(k=3, temperature=0.7, top_p=0.95, max_new_tokens=12, batch_size=3, n_shots=1)
    base.update(kw)
    return SamplerSettings(**base)


@pytest.mark.slow
def test_same_seed_same_samples(real_model):
    model, tok = real_model
    spec = _spec("relu_where")
    prompt = build_prompt(spec, "body", "completion", 1)
    a = sample_task(model, tok, spec, prompt, _short_settings(), seed=3)
    b = sample_task(model, tok, spec, prompt, _short_settings(), seed=3)
    c = sample_task(model, tok, spec, prompt, _short_settings(), seed=4)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_logprobs for r in a] == [r.token_logprobs for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]
    for r in a:
        assert r.n_prompt_tokens > 100 and r.prompt_sha and r.finish_reason in ("stop", "length")
        assert (r.code_sha256 == "") == (r.program == "")


@pytest.mark.slow
def test_logprobs_are_raw_and_match_teacher_forcing(real_model):
    model, tok = real_model
    spec = _spec("relu_where")
    prompt = build_prompt(spec, "body", "completion", 1)
    recs = sample_task(model, tok, spec, prompt, _short_settings(temperature=0.5), seed=1)
    prompt_ids = tok(prompt, return_tensors="pt")["input_ids"]
    for r in recs:
        ids = torch.cat([prompt_ids, torch.tensor([r.token_ids])], dim=1)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, prompt_ids.shape[1] - 1 : -1].float()
        want = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(r.token_ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(r.token_logprobs), want, atol=1e-4), (r.token_logprobs, want)


@pytest.mark.slow
def test_decode_loop_matches_generate(real_model):
    model, tok = real_model
    spec = _spec("relu_where")
    prompt_ids = tok(build_prompt(spec, "body", "completion", 1), return_tensors="pt")["input_ids"]
    torch.manual_seed(11)
    ours = generate_batch(model, tok, prompt_ids, 2, 0.8, 0.9, 10, [], drop_finished=False)
    torch.manual_seed(11)
    ref = model.generate(
        prompt_ids.expand(2, -1), do_sample=True, temperature=0.8, top_p=0.9, top_k=None, max_new_tokens=10
    )
    for row, sample in enumerate(ours):
        n = len(sample.token_ids)
        assert ref[row, prompt_ids.shape[1] : prompt_ids.shape[1] + n].tolist() == sample.token_ids
