"""A stand-in for conda, for what Snakemake's --use-conda calls (tests/test_conda_deploy.py).

``conda env create --file F --prefix P`` makes P a virtual environment whose "conda packages"
are those of the test's own environment (FAKE_CONDA_PACKAGES, a site-packages folder linked in
with a .pth file; tests/test_conda_envs.py checks that the env files pin the same versions), then
installs the file's ``pip:`` section as conda does: written as a requirements file beside F and
``python -m pip install -U -r`` run from F's folder. Every call is recorded in
FAKE_CONDA_RECORD (one JSON object per line).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent  # holds bin/activate


def record(**entry):
    with open(os.environ["FAKE_CONDA_RECORD"], "a") as handle:
        handle.write(json.dumps({"time": time.time(), **entry}) + "\n")


def env_create(args):
    file = Path(args[args.index("--file") + 1].strip('"'))
    prefix = Path(args[args.index("--prefix") + 1].strip('"'))
    spec = yaml.safe_load(file.read_text())
    pip = [dep for item in spec["dependencies"] if isinstance(item, dict) for dep in item["pip"]]
    subprocess.run([os.environ["FAKE_CONDA_PYTHON"], "-m", "venv", "--without-pip", str(prefix)], check=True)
    purelib = next((prefix / "lib").glob("python3*/site-packages"))
    (purelib / "_conda_packages.pth").write_text(os.environ["FAKE_CONDA_PACKAGES"] + "\n")
    # pip comes from the linked packages; `python -m pip` runs it for this environment
    requirements = file.parent / f"condaenv.{os.getpid()}.requirements.txt"
    requirements.write_text("\n".join(pip) + "\n")
    try:
        proc = subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "install", "-U", "-r", str(requirements)],
                              cwd=file.parent, capture_output=True, text=True)
    finally:
        requirements.unlink()
    record(command="env create", file=str(file), prefix=str(prefix), pip=pip, pip_cwd=str(file.parent),
           returncode=proc.returncode)
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.stderr.write("\nPip subprocess error: pip failed\n")
        return 1
    return 0


def main(args):
    if args == ["--version"]:
        print("conda 24.11.3")
    elif args[:2] == ["info", "--json"]:
        print(json.dumps({"conda_prefix": str(ROOT), "root_prefix": str(ROOT), "platform": "linux-64"}))
    elif args[:2] == ["config", "--get"]:
        print(json.dumps({"get": {"channel_priority": "strict"}}))
    elif args[0] == "clean":
        record(command="clean", argv=args)  # no package cache to clean
    elif args[:2] == ["env", "create"]:
        return env_create(args[2:])
    else:
        record(command="unsupported", argv=args)
        print(f"fake conda: unsupported call {args}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
