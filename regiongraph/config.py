"""The workflow's config checked against ``config/schema.yaml``, with errors a person can read.

Snakemake's own ``validate`` prints the whole failing sub-schema (over 1,600 lines for a
misspelt top-level key). :func:`validate_config` fills in the schema's defaults as Snakemake's
does, and turns each violation into one line: the key path, what is wrong, and the allowed
keys or values (with the closest match for a misspelt key)::

    config: index.min_frame: unknown key; did you mean min_frames? (allowed: min_frames, short_videos, unknown_labels)
    config: flow.backend: 'cuda-magic' is not allowed (allowed: opencv, torch)

``rules/common.smk`` calls it once, before any rule is defined. This module imports only what
Snakemake itself needs (jsonschema, yaml), so that the workflow parses in any Snakemake
environment.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

MAX_LISTED = 12  # allowed values shown at most; the schema has the rest


class ConfigError(ValueError):
    """The config breaks the schema; the message lists every problem, one per line."""


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _with_defaults(validator_class):
    """A validator class that fills in ``default`` of absent properties while it validates."""
    import jsonschema

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _key_path(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _schema_at(schema: Mapping[str, Any], path) -> Mapping[str, Any]:
    """The sub-schema that describes the value at ``path`` (object properties only)."""
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return node


def _allowed(values) -> str:
    shown = ", ".join(str(v) for v in list(values)[:MAX_LISTED])
    return shown + (", ..." if len(values) > MAX_LISTED else "")


def _describe(error, schema: Mapping[str, Any]) -> Iterator[str]:
    """Lines for one ``jsonschema.ValidationError``."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(_schema_at(schema, path).get("properties", {}))
        known = set(allowed)
        for key in sorted(k for k in error.instance if k not in known):
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            yield f"{_key_path([*path, key])}: unknown key{hint} (allowed: {_allowed(allowed)})"
        return
    where = _key_path(path)
    value = error.instance
    if error.validator == "enum":
        yield f"{where}: {value!r} is not allowed (allowed: {_allowed(error.validator_value)})"
    elif error.validator == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        yield f"{where}: {value!r} is not of type {wanted}"
    elif error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "greater than",
            "exclusiveMaximum": "less than",
        }
        yield f"{where}: {value!r} must be {words[error.validator]} {error.validator_value}"
    else:
        yield f"{where}: {error.message}"


def config_problems(config: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``config``, one line each; fills in defaults."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(validator_class)(schema)
    problems: list[str] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        for line in _describe(error, schema):
            if line not in problems:
                problems.append(line)
    return problems


def validate_config(
    config: dict[str, Any], schema_path: str | os.PathLike, configfiles=()
) -> dict[str, Any]:
    """``config`` with the schema's defaults filled in, or a short :class:`ConfigError`."""
    problems = config_problems(config, load_schema(schema_path))
    if problems:
        given = f" (from {', '.join(map(str, configfiles))})" if configfiles else ""
        raise ConfigError(
            f"the config{given} does not match {schema_path}:\n"
            + "\n".join(f"  config: {line}" for line in problems)
        )
    return config
