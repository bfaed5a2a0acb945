"""Where a configured file comes from: ``boxes.weights`` and ``backbone.weights`` take a local
path or a URL. Standard library only: the workflow files import it too."""

from __future__ import annotations

import os

URL_SCHEMES = ("http://", "https://", "ftp://", "file://")


def is_url(path_or_url: str | os.PathLike | None) -> bool:
    """Whether a configured path-or-URL value is a URL (downloaded by the job that uses it)."""
    return str(path_or_url).startswith(URL_SCHEMES)
