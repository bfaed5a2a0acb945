"""``--use-conda`` environments verified without conda.

For every rule (as Snakemake parses it, under each backend choice), the ``conda:`` file exists
and parses, and every third-party module that the code the rule runs imports (its script and,
following imports through the package with ``ast``, every ``regiongraph`` module it reaches) is
provided by a package the env lists. Pinned versions agree with requirements.txt and with the
ranges of pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.conftest import REPO
from tests.workflow_rules import RuleInfo, load_rules

PACKAGE = "regiongraph"

# Import name -> the distribution that provides it (PyPI names; conda-forge names below).
IMPORT_TO_PACKAGE = {
    "numpy": "numpy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "h5py": "h5py",
    "PIL": "pillow",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    # the contrib build: cv2.optflow (TV-L1) is not in plain opencv-python
    "cv2": "opencv-contrib-python-headless",
    "torch": "torch",
    "torchvision": "torchvision",
    "triton": "triton",
    "matplotlib": "matplotlib",
    "detectron2": "detectron2",
    "av": "av",
}
CONDA_TO_PYPI = {"pytorch": "torch", "py-opencv": "opencv"}

# Modules the code imports only inside the backend that needs them (lazily); a rule's env
# must provide them when the config selects that backend, which BACKENDS checks.
BACKEND_ONLY = {"torch", "torchvision", "triton", "detectron2"}
# (config section, backend) -> (rule, modules its code then imports)
BACKENDS = {
    ("flow", "torch"): ("flow_shard", {"torch", "triton"}),
    ("boxes", "torchvision"): ("boxes_shard", {"torch", "torchvision"}),
    ("boxes", "detectron2"): ("boxes_shard", {"torch", "torchvision", "detectron2"}),
}
# detectron2 cannot be listed in an env file (pip must build it without build isolation):
# the env's post-deploy script builds it after Snakemake creates the env.
INSTALLED_AFTER_CREATION = {"detectron2.yaml": {"detectron2"}}


def normalise(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name).lower()
    return CONDA_TO_PYPI.get(name, name)


@cache
def read_env(path: Path) -> dict:
    """{"packages": {name: pinned version or None}, "editable": [paths], "channels": [...]}"""
    data = yaml.safe_load(path.read_text())
    packages: dict[str, str | None] = {}
    editable: list[Path] = []

    def add(spec: str, sep: str) -> None:
        match = re.fullmatch(rf"\s*([A-Za-z0-9_.\-]+)\s*(?:{sep}\s*([0-9][0-9A-Za-z.*+!]*))?\s*(.*)", spec)
        assert match, f"{path.name}: cannot read dependency {spec!r}"
        packages[normalise(match[1])] = match[2]

    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                if pip_dep.startswith("-e "):
                    editable.append((path.parent / pip_dep[3:].strip()).resolve())
                else:
                    add(pip_dep, "==")
        else:
            add(dep, "==?")
    return {"packages": packages, "editable": editable, "channels": data.get("channels")}


def module_path(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(absolute module name, imported lazily?) for every import in a file. Lazily: inside a
    function, or under an ``if``/``try``, so it runs only on some paths."""
    found: list[tuple[str, bool]] = []
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = module.split(".")
                    parts = parts if is_package else parts[:-1]
                    base = ".".join(parts[: len(parts) - child.level + 1])
                    name = f"{base}.{child.module}" if child.module else base
                else:
                    name = child.module
                found.append((name, lazy))
                # "from package import submodule" imports the submodule
                found.extend((f"{name}.{alias.name}", lazy) for alias in child.names
                             if name.split(".")[0] == PACKAGE and module_path(f"{name}.{alias.name}"))
            lazier = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.Try))
            visit(child, lazier)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def code_closure(script: Path) -> tuple[set[str], set[str], list[Path]]:
    """(third-party modules always imported, those imported only lazily, files reached)."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    files_seen: dict[Path, bool] = {}
    always: set[str] = set()
    every: set[str] = set()
    queue: list[tuple[Path, str, bool]] = [(script, "__main__", False)]
    while queue:
        path, module, lazy = queue.pop()
        if path in files_seen and (files_seen[path] is False or lazy):
            continue  # already followed with an equal or stronger (non-lazy) reach
        files_seen[path] = lazy
        for name, lazy_import in _imports(path, module):
            reach_lazy = lazy or lazy_import
            top = name.split(".")[0]
            if top == PACKAGE:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # parent packages' __init__ run too
                    sub = ".".join(parts[:i])
                    sub_path = module_path(sub)
                    if sub_path is not None:
                        queue.append((sub_path, sub, reach_lazy))
            elif top not in stdlib:
                every.add(top)
                if not reach_lazy:
                    always.add(top)
    return always, every - always, list(files_seen)


@cache
def rules_under(section: str | None = None, backend: str | None = None) -> dict[str, RuleInfo]:
    configfiles = []
    if section:
        path = Path(tempfile.mkdtemp()) / f"{section}-{backend}.yaml"
        key = "name" if section == "dataset" else "backend"  # dataset.name: ssv2's own rules
        path.write_text(yaml.safe_dump({section: {key: backend}}))
        configfiles.append(path)
    return load_rules(REPO, configfiles)


def test_every_rule_that_runs_code_has_a_parsing_env():
    rules = rules_under()
    runs_code = [r for r in rules.values() if r.script or r.shell]
    assert len(runs_code) >= 4
    for rule in runs_code:
        assert rule.conda_env is not None, f"rule {rule.name} ({rule.rule_file.name}) has no conda:"
        assert rule.conda_env.is_file(), f"rule {rule.name}: {rule.conda_env} does not exist"
        env = read_env(rule.conda_env)
        assert env["channels"] == ["conda-forge", "nodefaults"], rule.conda_env.name
        assert "python" in env["packages"], rule.conda_env.name
        # the package itself: no path in the env file (Snakemake deploys a copy of it under
        # .snakemake/conda/), but the post-deploy script beside it, from REGIONGRAPH_SOURCE
        assert not env["editable"], f"{rule.conda_env.name}: '-e' paths break in Snakemake's copy"
        post_deploy = rule.conda_env.with_suffix(".post-deploy.sh")
        assert post_deploy.is_file(), f"{rule.conda_env.name}: no {post_deploy.name} beside it"
        assert 'pip install --no-deps -e "$REGIONGRAPH_SOURCE"' in post_deploy.read_text()


VARIANTS = [(None, None), *BACKENDS, ("dataset", "ssv2")]


@pytest.mark.parametrize(("section", "backend"), VARIANTS, ids=[f"{s}-{b}" for s, b in VARIANTS])
def test_env_provides_every_module_the_rule_imports(section, backend):
    rules = rules_under(section, backend)
    problems = []
    for rule in rules.values():
        if rule.script is None:
            continue  # target rules; no rule here runs shell commands
        always, lazily, files = code_closure(rule.script)
        needed = always | (lazily - BACKEND_ONLY)
        if (section, backend) in BACKENDS and BACKENDS[(section, backend)][0] == rule.name:
            needed |= BACKENDS[(section, backend)][1]
        if any("parquet" in path.read_text() for path in files):
            needed.add("pyarrow")  # pandas' parquet engine, never imported by name
        env = read_env(rule.conda_env)
        extra = INSTALLED_AFTER_CREATION.get(rule.conda_env.name, set())
        for module in sorted(needed):
            assert module in IMPORT_TO_PACKAGE, (
                f"rule {rule.name} imports {module!r}: add it to IMPORT_TO_PACKAGE"
            )
            package = normalise(IMPORT_TO_PACKAGE[module])
            if package not in env["packages"] and package not in extra:
                problems.append(f"rule {rule.name}: {rule.conda_env.name} lacks {package} (import {module})")
    assert not problems, "\n".join(problems)


def test_detectron2_env_builds_it_after_creation():
    text = (REPO / "envs" / "detectron2.post-deploy.sh").read_text()
    assert "--no-build-isolation" in text and "detectron2.git" in text and "DETECTRON2_SOURCE" in text
    header = (REPO / "envs" / "detectron2.yaml").read_text()
    section = re.search(r'README, "([^"]+)"', header)[1]
    assert f"### {section}" in (REPO / "README.md").read_text(), f"README has no section {section!r}"


def test_closure_follows_package_imports_and_separates_lazy_ones(tmp_path):
    """The import walker itself, on the flow script: OpenCV at module level, torch only inside
    the torch backend's branch."""
    always, lazily, files = code_closure(REPO / "scripts" / "flow.py")
    assert "cv2" in always and "h5py" in always
    assert "torch" in lazily and "torch" not in always
    assert REPO / "regiongraph" / "flow" / "stage.py" in files


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[normalise(req.name)] = spec.version
    return pins


def test_env_versions_agree_with_requirements_and_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ranges = {normalise(Requirement(d).name): Requirement(d).specifier for d in project["dependencies"]}
    pins = _pins()
    python = SpecifierSet(project["requires-python"])
    problems = []
    for path in sorted((REPO / "envs").glob("*.yaml")):
        packages = read_env(path)["packages"]
        for name, version in packages.items():
            if name == "python":
                assert version and python.contains(Version(version + ".0")), f"{path.name}: python {version}"
                continue
            if version is None:
                continue
            if name in pins and pins[name] != version:
                problems.append(f"{path.name}: {name} {version}, requirements.txt {pins[name]}")
            if name in ranges and not ranges[name].contains(Version(version)):
                problems.append(f"{path.name}: {name} {version} outside pyproject's {ranges[name]}")
        # everything the package declares is in the torch env (the env of most stages)
    torch_env = read_env(REPO / "envs" / "torch.yaml")["packages"]
    problems += [f"torch.yaml lacks {n} (pyproject dependency)" for n in ranges if n not in torch_env]
    assert not problems, "\n".join(problems)
