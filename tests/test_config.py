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


def test_every_schema_key_is_documented_in_the_configuration_page():
    schema = yaml.safe_load((REPO / "src/vegtts/schemas/config.schema.yaml").read_text())
    readme = (REPO / "docs/configuration.md").read_text()
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


def _plan(overrides: dict):
    return build_plan(validate_config(overrides), ["a"], "m", keys={"a": "0" * 12}, model_ident={"test": "m"})


def test_artifact_keys_follow_exactly_their_settings():
    base = _plan({})
    more_rounds = _plan({"evaluation": {"timing_rounds": 20}})
    other_temp = _plan({"sampling": {"temperature": 0.7}})
    more_threads = _plan({"sampling": {"threads": 1}})
    new_seed = _plan({"sampling": {"seeds": [0, 1]}})
    assert more_rounds.base_sample_key == base.base_sample_key
    assert more_rounds.base_eval_key != base.base_eval_key
    assert other_temp.base_sample_key != base.base_sample_key
    assert other_temp.base_eval_key == base.base_eval_key
    # threads and the list of seeds do not change which samples a seed produces
    assert more_threads.base_sample_key == base.base_sample_key
    assert new_seed.base_sample_key == base.base_sample_key
    assert set(base.base_sample_files()) < set(new_seed.base_sample_files())


def test_non_identity_settings_change_no_key_and_no_identity():
    from vegtts.plan import config_identity

    base = validate_config({})
    for override in ({"description": "other"}, {"resources_dir": "/elsewhere"}, {"sampling": {"threads": 1}},
                     {"sampling": {"openai": {"base_url": "http://other:1/v1", "timeout_s": 5, "max_retries": 1}}},
                     {"sampling": {"vllm": {"gpu_memory_utilization": 0.5}}}, {"evaluation": {"gpus": 2}}):
        other = validate_config(override)
        assert config_identity(other) == config_identity(base), override
        assert (_plan(override).base_sample_key, _plan(override).base_eval_key) == \
            (_plan({}).base_sample_key, _plan({}).base_eval_key), override
    assert config_identity(validate_config({"analysis": {"bootstrap": 700}})) != config_identity(base)


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"sampling": {"k": 4.0}}, ["'sampling.k'", "4.0", "wrong type (expected integer)"]),
        ({"sampling": {"k": "4.0"}}, ["'sampling.k'", "wrong type (expected integer)"]),
        ({"ttt": {"steps": 2.0}}, ["'ttt.steps'", "expected integer"]),
        ({"results_dir": ""}, ["'results_dir'", "empty string is not allowed"]),
        ({"results_dir": "/"}, ["'results_dir'", "'/' is not allowed"]),
        ({"results_dir": "//."}, ["'results_dir'", "is not allowed"]),
        ({"results_dir": "  "}, ["'results_dir'", "is not allowed"]),
        ({"resources_dir": "/"}, ["'resources_dir'", "is not allowed"]),
        ({"analysis": {"k_values": [1, 1000]}, "sampling": {"k": 4}}, ["'analysis.k_values'", "[1000]", "sampling.k = 4"]),
        ({"tasks": {"ids": []}}, ["'tasks.ids'", "an empty list is not allowed", '"all", "default"']),
    ],
)
def test_config_findings_of_issue_14(bad, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, message
    assert "expected string" not in message


def test_allowed_values_next_to_the_rejected_ones_pass():
    assert validate_config({"sampling": {"k": 4}, "analysis": {"k_values": [1, 4]}})["analysis"]["k_values"] == [1, 4]
    assert validate_config({"results_dir": "out/x", "resources_dir": "."})["results_dir"] == "out/x"
    assert validate_config({"sampling": {"temperature": 1}})["sampling"]["temperature"] == 1  # a number may be an int


def test_bad_yaml_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("experiment: x\nsampling:\n  k: 4\n   temperature: 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "line 4" in str(info.value)
