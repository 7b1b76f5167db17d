"""pipelines.data.safe_pickle: numpy arrays and builtin containers load; anything else is refused unrun."""

import os
import pickle

import numpy as np
import pytest

from pipelines.data.safe_pickle import load_pickle


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays_and_containers(tmp_path, protocol):
    obj = {
        "train": np.arange(12.0).reshape(2, 3, 2),
        "mask": np.eye(3, dtype=bool),
        "n": np.int64(3),
        "l": [1, (2.5, "x")],
    }
    write_pickle(tmp_path / "a.pkl", obj, protocol)
    back = load_pickle(tmp_path / "a.pkl")
    np.testing.assert_array_equal(back["train"], obj["train"])
    np.testing.assert_array_equal(back["mask"], obj["mask"])
    assert back["n"] == 3 and back["l"] == [1, (2.5, "x")]


def test_restricted_unpickler_reads_numpy_1_pickles(tmp_path):
    # Pickles written by numpy 1.x name numpy.core.multiarray; protocol 2 uses plain-text GLOBAL opcodes.
    data = pickle.dumps({"train": np.arange(6.0).reshape(1, 2, 3)}, protocol=2)
    assert b"numpy._core.multiarray" in data
    (tmp_path / "old.pkl").write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(load_pickle(tmp_path / "old.pkl")["train"], np.arange(6.0).reshape(1, 2, 3))


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


class Plain:
    pass


@pytest.mark.parametrize(("obj", "name"), [(Payload(), r"posix.getcwd"), (Plain(), r"test_safe_pickle.Plain")])
def test_restricted_unpickler_refuses_anything_else(tmp_path, obj, name):
    write_pickle(tmp_path / "evil.pkl", {"train": obj})
    with pytest.raises(
        ValueError, match=rf"evil.pkl contains a pickled \S*{name}; expected only numpy arrays.*restricted"
    ):
        load_pickle(tmp_path / "evil.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match=r"junk.pkl is not a readable pickle of numpy arrays"):
        load_pickle(tmp_path / "junk.pkl")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.pkl does not exist"):
        load_pickle(tmp_path / "none.pkl")
