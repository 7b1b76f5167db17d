"""Restricted unpickling: numpy arrays, dtypes, scalars and builtin containers only.

Data sets that ship as pickles (Algonauts 2021 ``*.pkl``, HCP 7T ``clip_times_24.npy``) are read through
:func:`load_pickle`, whose unpickler refuses every other class or function before importing it, so a crafted file
cannot run code. Weights are never pickled: they are safetensors.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a pickle of numpy arrays and builtin containers may reference: nothing that runs arbitrary code."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array rebuild function, wherever numpy keeps it
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 pickles rebuild arrays from a buffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x pickles
        allowed[module, "_reconstruct"] = reconstruct
        allowed[module, "scalar"] = scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[module, "_frombuffer"] = frombuffer
    builtins = (dict, list, tuple, set, frozenset, bytearray, bytes, str, int, float, complex, bool)
    for module in ("builtins", "__builtin__"):  # Python 3 and Python 2 pickles
        allowed.update({(module, t.__name__): t for t in builtins})
    allowed["_codecs", "encode"] = codecs.encode  # protocol-2 pickles from Python 3 store bytes this way
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle referenced a class or function outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` only returns numpy array machinery and builtin containers."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[module, name]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def load_pickle(source: str | Path | BinaryIO, name: str | None = None) -> Any:
    """Unpickle a file that may only contain numpy arrays, dtypes, scalars and builtin containers.

    Anything else (a class instance, a function call such as ``os.system``) stops the load before the object is
    imported or called. Python 2 pickles are read with ``encoding="latin1"``, as the Algonauts devkit does.

    Parameters
    ----------
    source : str, Path or binary file object
        The pickle file, or an open file positioned at the start of a pickle.
    name : str, optional
        The name used in error messages (defaults to the path).

    Returns
    -------
    The unpickled object.

    Raises
    ------
    FileNotFoundError
        If ``source`` is a path that does not exist.
    ValueError
        If the data are not a valid pickle, or reference anything outside the allow-list.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist.")
        with path.open("rb") as f:
            return load_pickle(f, name or str(path))
    name = name or getattr(source, "name", "pickle")
    try:
        return _RestrictedUnpickler(source, encoding="latin1").load()
    except _ForbiddenGlobal as err:
        raise ValueError(
            f"{name} contains a pickled {err}; expected only numpy arrays, dtypes and scalars and builtin containers "
            "(dict, list, tuple, ...). The restricted unpickler never loads other classes; re-save the data as plain "
            "numpy arrays in a dict."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{name} is not a readable pickle of numpy arrays: {type(err).__name__}: {err}") from err
