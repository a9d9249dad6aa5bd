"""Load and validate an experiment config against the JSON schema, filling defaults.

Errors name the key, the value and what is allowed, e.g.
``config key 'sampling.k': 0 is not allowed (must be >= 1)``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value was rejected; the message says which key, what was wrong, what is allowed."""


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.cache
def _schema_properties() -> dict[str, Any]:
    return load_schema()["properties"]


def schema_default(key: str) -> Any:
    """The schema's default of a config key, e.g. "sampling.max_new_tokens": the one place a default
    is written down, so the settings classes of the stages take theirs from here."""
    node: dict[str, Any] = {"properties": _schema_properties()}
    for part in key.split("."):
        node = node["properties"][part]
    return copy.deepcopy(node["default"])


def fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `config` with every missing key set to the schema's default, recursively."""
    out = copy.deepcopy(config) if config is not None else {}
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(out.get(key), dict):
            out[key] = fill_defaults(out[key], sub)
    return out


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type", [])
    return kind if isinstance(kind, list) else [kind]


def coerce_strings(value: Any, node: dict[str, Any]) -> Any:
    """Turn numeric/boolean strings into numbers/booleans where the schema expects them.

    Snakemake's `--config key={'k': 0}` delivers nested values as strings ('0').
    """
    if isinstance(value, dict):
        props = node.get("properties", {})
        return {k: coerce_strings(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        items = node.get("items")
        if items is None:
            items = next((o.get("items") for o in node.get("oneOf", []) if o.get("type") == "array"), None)
        if isinstance(items, dict):
            return [coerce_strings(v, items) for v in value]
        return value
    if not isinstance(value, str):
        return value
    types = _types(node) + [t for o in node.get("oneOf", []) for t in _types(o)]
    if "string" in types and not node.get("oneOf"):
        return value
    text = value.strip()
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            pass
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in types and text.lower() in ("null", "none", "~"):
        return None
    return value


def _key_path(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _allowed_keys(schema_node: dict[str, Any]) -> list[str]:
    return sorted(schema_node.get("properties", {}))


def describe_error(error: Any) -> str:
    """Turn a jsonschema ValidationError into one sentence a user can act on."""
    key = _key_path(error)
    value = error.instance
    kind = error.validator
    if kind == "additionalProperties":
        allowed = _allowed_keys(error.schema)
        unknown = sorted(set(value) - set(allowed))
        parts = []
        for name in unknown:
            full = f"{key}.{name}" if key != "<top level>" else name
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            parts.append(f"unknown config key '{full}'{hint}")
        return "; ".join(parts) + f". Allowed keys here: {', '.join(allowed)}"
    if kind == "enum":
        return f"config key '{key}': {value!r} is not allowed (allowed: {', '.join(map(repr, error.validator_value))})"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"config key '{key}': {value!r} is not allowed (must be {op} {error.validator_value})"
    if kind == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"config key '{key}': {value!r} has the wrong type (expected {want})"
    if kind == "minItems" and error.validator_value == 1 and value == []:
        return f"config key '{key}': an empty list is not allowed (give at least one item){_described(error)}"
    if kind == "minLength" and value == "":
        return f"config key '{key}': an empty string is not allowed{_described(error)}"
    if kind in ("minItems", "maxItems", "uniqueItems", "minLength", "pattern"):
        return f"config key '{key}': {value!r} is not allowed ({error.message})"
    if kind == "oneOf" and error.context:
        from jsonschema.exceptions import best_match

        # describe the alternative whose type the value has (an empty list is not "the wrong type
        # (expected string)": it is a list that may not be empty)
        by_branch: dict[Any, list[Any]] = {}
        for sub in error.context:
            by_branch.setdefault(sub.relative_schema_path[0] if sub.relative_schema_path else None, []).append(sub)
        typed = [errs for errs in by_branch.values() if not any(e.validator == "type" for e in errs)]
        chosen = best_match(typed[0] if len(typed) == 1 else error.context)
        chosen.parent_description = error.schema.get("description", "")
        return describe_error(chosen)
    if kind == "oneOf":
        options = [s.get("enum") or s.get("type") for s in error.validator_value]
        return f"config key '{key}': {value!r} is not allowed (expected one of: {options})"
    return f"config key '{key}': {error.message}"


def _described(error: Any) -> str:
    text = getattr(error, "parent_description", "") or error.schema.get("description", "")
    return f". Allowed: {text.strip()}" if text else ""


def _validator_class() -> Any:
    """Draft 2020-12, but `integer` means an int: JSON Schema lets 4.0 pass as an integer, and a
    float where the code expects a count (sampling.k: 4.0) validates, gets its own key, then crashes."""
    from jsonschema import Draft202012Validator, validators

    def is_int(_checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_int)
    return validators.extend(Draft202012Validator, type_checker=checker)


def _is_root(path: str) -> bool:
    expanded = os.path.expanduser(path)
    return os.path.exists(expanded) and os.path.samefile(expanded, "/")


def semantic_errors(cfg: dict[str, Any]) -> list[str]:
    """Problems the schema cannot express: dangerous folders, keys that must agree with each other."""
    errors = []
    for key in ("results_dir", "resources_dir"):
        value = cfg.get(key, "")
        if isinstance(value, str) and value and (not value.strip() or _is_root(value)):
            errors.append(f"config key '{key}': {value!r} is not allowed (the workflow writes and moves files "
                          "there: give a folder of its own, e.g. 'results')")
    k_values = cfg.get("analysis", {}).get("k_values")
    k = cfg.get("sampling", {}).get("k")
    if isinstance(k_values, list) and isinstance(k, int):
        too_big = [v for v in k_values if isinstance(v, int) and v > k]
        if too_big:
            errors.append(f"config key 'analysis.k_values': {too_big} exceed sampling.k = {k} (fast_p@k and best "
                          f"speedup@k need k <= K samples per task); use values <= {k}, or 'auto'")
    return errors


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and validate; raise ConfigError listing every problem found."""
    schema = load_schema()
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    filled = fill_defaults(coerce_strings(config, schema), schema)
    validator = _validator_class()(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    messages = [describe_error(e) for e in errors] or semantic_errors(filled)
    if messages:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(messages))
    return filled


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, merge `overrides` (nested dicts), fill defaults and validate."""
    raw = load_yaml(path) or {}
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate_config(raw)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dataclass_from_settings(cls: Any, settings: Any, label: str) -> Any:
    """`cls(**settings)`, refusing keys `cls` does not have (error names `label` and what is known)."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown {label} settings: {unknown}; known: {sorted(known)}")
    return cls(**dict(settings))
