"""Config schema: defaults are filled and bad values are rejected with the key, value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from vegtts.config import ConfigError, load_config, validate_config
from vegtts.plan import build_plan, model_location

REPO = Path(__file__).resolve().parents[1]


def test_defaults_fill_an_empty_config():
    cfg = validate_config({})
    assert cfg["sampling"]["k"] == 16
    assert cfg["prompt"]["format"] == "body"
    assert cfg["evaluation"]["device"] == "cpu"


def test_embedded_default_config_is_valid():
    cfg = load_config(REPO / "config.yaml")
    assert cfg["experiment"] == "default"


def test_every_schema_key_is_documented_in_the_readme():
    schema = yaml.safe_load((REPO / "src/vegtts/schemas/config.schema.yaml").read_text())
    readme = (REPO / "README.md").read_text()
    for section, node in schema["properties"].items():
        assert f"`{section}`" in readme, section
        for key in node.get("properties", {}):
            assert f"`{section}.{key}`" in readme, f"{section}.{key}"


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"samplng": {"k": 4}}, ["unknown config key 'samplng'", "did you mean 'sampling'"]),
        ({"sampling": {"kk": 4}}, ["unknown config key 'sampling.kk'", "did you mean 'k'"]),
        ({"sampling": {"k": 0}}, ["'sampling.k'", "0 is not allowed", ">= 1"]),
        ({"sampling": {"temperature": 0}}, ["'sampling.temperature'", "> 0"]),
        ({"prompt": {"format": "diff"}}, ["'prompt.format'", "'diff'", "'body'", "'module'"]),
        ({"sampling": {"seeds": "zero"}}, ["'sampling.seeds'", "wrong type"]),
        ({"tasks": {"ids": []}}, ["'tasks.ids'"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(bad, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    for fragment in expected:
        assert fragment in str(info.value)


def test_several_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        validate_config({"sampling": {"k": 0, "top_p": 2}})
    assert "sampling.k" in str(info.value) and "sampling.top_p" in str(info.value)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="model.source.*does not exist"):
        model_location(str(tmp_path / "nope"), "resources")
    (tmp_path / "m").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        model_location(str(tmp_path / "m"), "resources")
    with pytest.raises(ValueError, match="neither a local folder nor a model in the"):
        model_location("no-such-org/no-such-model", "resources")


def test_artifact_keys_follow_exactly_their_settings():
    cfg = validate_config({})
    base = build_plan(cfg, ["a"], "m", None)
    more_rounds = build_plan(validate_config({"evaluation": {"timing_rounds": 20}}), ["a"], "m", None)
    other_temp = build_plan(validate_config({"sampling": {"temperature": 0.7}}), ["a"], "m", None)
    more_threads = build_plan(validate_config({"sampling": {"threads": 1}}), ["a"], "m", None)
    new_seed = build_plan(validate_config({"sampling": {"seeds": [0, 1]}}), ["a"], "m", None)
    assert more_rounds.base_sample_key == base.base_sample_key
    assert more_rounds.base_eval_key != base.base_eval_key
    assert other_temp.base_sample_key != base.base_sample_key
    assert other_temp.base_eval_key == base.base_eval_key
    # threads and the list of seeds do not change which samples a seed produces
    assert more_threads.base_sample_key == base.base_sample_key
    assert new_seed.base_sample_key == base.base_sample_key
    assert set(base.base_sample_files()) < set(new_seed.base_sample_files())
