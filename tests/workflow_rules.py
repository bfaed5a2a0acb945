"""The workflow's rules as Snakemake itself parses them (its API), for tests that check every rule.

Loading the Snakefile through ``snakemake.api`` evaluates the rule files exactly as a run would
(config merged and validated, conditional resources and conda envs resolved), without building
a DAG or touching any file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

from tests.conftest import REPO


@dataclass
class RuleInfo:
    name: str
    rule_file: Path  # the .smk file that defines the rule
    conda_env: Path | None  # absolute path of its conda: file
    script: Path | None  # absolute path of its script: file
    shell: str | None
    threads: int | None
    resources: dict[str, int | str] = field(default_factory=dict)  # concrete values only
    outputs: list[str] = field(default_factory=list)  # output paths or patterns, as declared


def _resolve(rule_file: Path, path: str | None) -> Path | None:
    if path is None:
        return None
    path = str(path)
    return Path(path) if Path(path).is_absolute() else (rule_file.parent / path).resolve()


def load_rules(workdir: Path = REPO, configfiles: list[Path] = ()) -> dict[str, RuleInfo]:
    """Every rule of ``REPO/Snakefile`` (config ``config/config.yaml`` plus ``configfiles``)."""
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
            snakefile=REPO / "Snakefile",
            workdir=workdir,
        )
        workflow = workflow_api._workflow  # parses the Snakefile and its includes
        rules = {}
        for rule in workflow.rules:
            rule_file = Path(str(rule.snakefile)).resolve()
            resources = {}
            for name, resource in (rule.resources or {}).items():
                if name.startswith("_") or resource.is_evaluable():
                    continue
                resources[name] = resource.value
            cores = (rule.resources or {}).get("_cores")
            rules[rule.name] = RuleInfo(
                name=rule.name,
                rule_file=rule_file,
                conda_env=_resolve(rule_file, rule.conda_env),
                script=_resolve(rule_file, rule.script),
                shell=rule.shellcmd,
                threads=None if cores is None or cores.is_evaluable() else cores.value,
                resources=resources,
                outputs=[str(path) for path in rule.output],
            )
    return rules
