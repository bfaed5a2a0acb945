"""Defaults live in config/schema.yaml: every library dataclass field that is a config key has
the schema's default (a field with no config key may have its own)."""

from __future__ import annotations

import dataclasses

import pytest

from regiongraph.config import load_schema
from regiongraph.dataset.toy import ToySettings
from regiongraph.detect.stage import BoxSettings
from regiongraph.features.cache import BackboneSettings
from regiongraph.features.clips import ClipSettings
from regiongraph.flow.params import TVL1Params
from regiongraph.train.finetune import FinetuneSettings
from regiongraph.train.loop import TrainSettings
from tests.conftest import REPO

SCHEMA = load_schema(REPO / "config" / "schema.yaml")


def section(*path: str) -> dict:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node["properties"]


def config_key(field: str) -> str:
    return field.rstrip("_")  # flow.tvl1.lambda is TVL1Params.lambda_ (a Python keyword)


def normalise(value):
    return list(value) if isinstance(value, tuple) else value


CASES = [
    (BoxSettings, [("boxes",)]),
    (TrainSettings, [("gcn",), ()]),
    (FinetuneSettings, [("backbone", "finetune"), ()]),
    (ClipSettings, [("backbone",), ("backbone", "finetune"), ("boxes",), ()]),
    (BackboneSettings, [("backbone",)]),
    (TVL1Params, [("flow", "tvl1")]),
    (ToySettings, [("dataset", "toy"), ()]),
]


@pytest.mark.parametrize(("cls", "sections"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_dataclass_defaults_are_the_schemas(cls, sections):
    checked = 0
    for field in dataclasses.fields(cls):
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        for path in sections:
            properties = section(*path) if path else SCHEMA["properties"]
            key = config_key(field.name)
            if key in properties and "default" in properties[key] and properties[key].get("type") != "object":
                wanted = properties[key]["default"]
                assert normalise(default) == wanted, (
                    f"{cls.__name__}.{field.name} defaults to {default!r}, but the schema's "
                    f"{'.'.join((*path, key))} to {wanted!r}"
                )
                checked += 1
                break
    assert checked >= 3, f"{cls.__name__}: only {checked} fields matched a config key"
