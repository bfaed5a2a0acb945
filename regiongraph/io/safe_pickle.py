"""Reading weight pickles without running code: arrays, numbers, strings and containers only.

A pickle can run arbitrary code when loaded (its ``find_class`` can name any callable), and the
weights this pipeline reads come from the internet: video-nonlocal-net's Caffe2 pickles of the
I3D backbone and detectron2's model-zoo ``.pkl`` files (whose own checkpointer calls plain
``pickle.load``). :func:`load_array_pickle` reads them with an unpickler that constructs numpy
arrays, dtypes and scalars, ``collections.OrderedDict`` and the built-in containers, strings
and numbers, and refuses every other global, naming the file and the global, before anything
is constructed from it.
"""

from __future__ import annotations

import collections
import os
import pickle
from typing import Any

import numpy as np


class UnsafePickleError(ValueError):
    """A pickle asked to construct something other than numpy arrays and plain data."""


def _numpy_core_global(name: str) -> Any:
    """``numpy._core.multiarray.<name>`` (numpy 2) or ``numpy.core.multiarray.<name>``."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


# The only globals an array pickle needs: the ndarray reconstruction, ndarray and dtype
# themselves, numpy scalars, and ordered dicts (detectron2's state dicts). Python 2 pickles name
# ``numpy.core``; numpy 2 writes ``numpy._core``.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_core_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_core_global("scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits numpy arrays, dicts, lists, strings and numbers only."""

    def __init__(self, file, path: str | os.PathLike):
        super().__init__(file, encoding="latin1")  # Python 2 pickles: str -> latin1
        self.path = str(path)

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self.path}: refusing to unpickle global {module}.{name}; a weights pickle "
                "may only hold numpy arrays, dicts, lists, strings and numbers"
            )
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.path}: refusing persistent id {pid!r} in a weights pickle")


def load_array_pickle(path: str | os.PathLike) -> Any:
    """The data of the pickle at ``path``, constructed by :class:`ArrayUnpickler`."""
    with open(path, "rb") as handle:
        return ArrayUnpickler(handle, path).load()
