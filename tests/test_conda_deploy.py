"""``--use-conda`` as Snakemake deploys the environments, without conda.

Snakemake itself (``--use-conda --conda-create-envs-only``) copies each ``envs/<env>.yaml`` to
``.snakemake/conda/<hash>.yaml``, has conda create the environment from that copy, then copies
``envs/<env>.post-deploy.sh`` beside it and runs it inside the new environment from the working
folder. Only conda is a stand-in (``tests/fake_conda/``): a plain virtual environment whose
conda packages are this test environment's own, with the env file's ``pip:`` section installed
as conda installs it (a requirements file beside the copied env file, pip run from its folder),
so that a relative path in an env file or a post-deploy script fails here as it fails there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, snakemake_cmd, tiny_config

FAKE_CONDA = Path(__file__).parent / "fake_conda"
OWN = ("regiongraph", "__editable__", "detectron2", "_regiongraph")  # what the envs must install


def conda_packages(root: Path) -> Path:
    """This environment's site-packages without the packages the deployment installs."""
    linked = root / "conda-packages"
    linked.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(OWN):
            (linked / entry.name).symlink_to(entry)
    return linked


def deploy(tmp_path: Path, config: dict, env_extra: dict | None = None) -> tuple[subprocess.CompletedProcess, list[dict]]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    record = tmp_path / "conda.jsonl"
    env = {
        **os.environ,
        "PATH": f"{FAKE_CONDA / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_CONDA_PYTHON": str(Path(sys.base_prefix) / "bin" / "python3"),
        "FAKE_CONDA_PACKAGES": str(conda_packages(tmp_path)),
        "FAKE_CONDA_RECORD": str(record),
        "NO_COLOR": "1",
        **(env_extra or {}),
    }
    env.pop("REGIONGRAPH_SOURCE", None)
    proc = subprocess.run(
        snakemake_cmd("-s", str(REPO / "Snakefile"), "--configfile", str(configfile), "--cores", "1",
                      "--use-conda", "--conda-create-envs-only"),
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return proc, calls


def installed(prefix: Path, name: str) -> dict | None:
    """The environment's own record of a distribution (its direct_url.json), if installed there."""
    for dist in (prefix / "lib").glob(f"python3*/site-packages/{name}-*.dist-info"):
        direct = dist / "direct_url.json"
        return json.loads(direct.read_text()) if direct.exists() else {}
    return None


def check_deployed(workdir: Path, calls: list[dict], envs: set[str]) -> dict[str, Path]:
    created = [c for c in calls if c["command"] == "env create"]
    conda = workdir / ".snakemake" / "conda"
    prefixes = {}
    for call in created:
        file = Path(call["file"])
        # Snakemake's copy, not the repository's file, and pip ran beside it
        assert file.parent == conda and file.suffix == ".yaml", file
        assert call["pip_cwd"] == str(conda) and call["returncode"] == 0
        original = next(n for n in envs if (REPO / "envs" / f"{n}.yaml").read_text() == file.read_text())
        prefix = Path(call["prefix"])
        assert prefix == file.with_suffix("")
        assert Path(f"{prefix}.post-deploy.sh").read_text() == (REPO / "envs" / f"{original}.post-deploy.sh").read_text()
        prefixes[original] = prefix
    assert set(prefixes) == envs
    activated = [c for c in calls if c["command"] == "activate"]
    assert {Path(c["env"]) for c in activated} == set(prefixes.values())
    assert all(Path(c["cwd"]) == workdir for c in activated)  # post-deploy runs from the work folder
    for name, prefix in prefixes.items():
        package = installed(prefix, "regiongraph")
        assert package is not None, f"{name}: regiongraph not installed into the environment"
        assert package["url"] == REPO.as_uri() and package["dir_info"].get("editable"), package
        probe = subprocess.run([str(prefix / "bin" / "python"), "-c", "import regiongraph; print(regiongraph.__file__)"],
                               capture_output=True, text=True, check=True)
        assert Path(probe.stdout.strip()) == REPO / "regiongraph" / "__init__.py"
    return prefixes


@pytest.mark.slow
def test_env_files_and_post_deploy_scripts_install_the_package(tmp_path):
    proc, calls = deploy(tmp_path, tiny_config())
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_deployed(tmp_path / "work", calls, {"cv", "torch"})


def detectron2_wheel() -> Path | None:
    cache = Path(os.environ.get("REGIONGRAPH_WHEEL_CACHE", Path.home() / ".cache" / "regiongraph" / "wheels"))
    return next(iter(sorted(cache.glob("detectron2-*/detectron2-*.whl"))), None)


@pytest.mark.slow
def test_detectron2_env_builds_detectron2_after_creation(tmp_path):
    wheel = detectron2_wheel()
    if wheel is None:
        pytest.skip("no detectron2 wheel in ~/.cache/regiongraph/wheels (make detectron2 builds one "
                    "from a source tarball; README, 'The detectron2 backend')")
    config = tiny_config(boxes={"backend": "detectron2"})
    proc, calls = deploy(tmp_path, config, {"DETECTRON2_SOURCE": str(wheel)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    prefixes = check_deployed(tmp_path / "work", calls, {"cv", "torch", "detectron2"})
    assert installed(prefixes["detectron2"], "detectron2") is not None
    assert installed(prefixes["torch"], "detectron2") is None


def test_post_deploy_script_outside_the_workflow_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REGIONGRAPH_SOURCE"}
    proc = subprocess.run(["bash", str(REPO / "envs" / "cv.post-deploy.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "REGIONGRAPH_SOURCE: not set: create this environment with snakemake --use-conda" in proc.stderr
    assert shutil.which("bash")
