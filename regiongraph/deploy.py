"""What the ``--use-conda`` environments need from the workflow that creates them.

Snakemake creates each environment from a copy of ``envs/<env>.yaml`` under
``.snakemake/conda/`` and runs a copy of ``envs/<env>.post-deploy.sh`` inside it, from the
working folder: neither can find the package by a relative path. The workflow exports its own
folder instead, and Snakemake's post-deploy call inherits its environment.
"""

from __future__ import annotations

import os

SOURCE_VARIABLE = "REGIONGRAPH_SOURCE"


def export_workflow_folder(folder: str | os.PathLike) -> None:
    """Set ``REGIONGRAPH_SOURCE`` to the workflow's folder, for the post-deploy scripts."""
    os.environ[SOURCE_VARIABLE] = os.fspath(folder)
