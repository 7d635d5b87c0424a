"""MNIST: the bundled copy, checksums, idx parsing, and downloads over real local HTTP."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from mirrorfit.datasets import _idx, fashion_mnist, mnist

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
NAMES = [filename for filename, _ in mnist.FILES.values()]


@pytest.fixture(scope="module")
def bundled() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    return mnist.load_data()


@pytest.fixture
def originals(tmp_path: Path) -> Path:
    """A directory with copies of the four bundled files."""
    folder = tmp_path / "originals"
    folder.mkdir()
    for name in NAMES:
        source = resources.files("mirrorfit.datasets") / "_data" / name
        (folder / name).write_bytes(source.read_bytes())
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[functools.partial[None]]:
    """``serve(folder)``: point mnist.MIRRORS at a real HTTP server on 127.0.0.1."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        monkeypatch.setattr(mnist, "MIRRORS", (f"http://127.0.0.1:{server.server_port}/",))

    yield functools.partial(start)
    for server in servers:
        server.shutdown()
        server.server_close()


def test_bundled_shapes_dtypes_and_labels(bundled) -> None:
    (x_train, y_train), (x_test, y_test) = bundled
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == TEST_COUNTS
    assert x_train.min() == 0 and x_train.max() == 255
    assert x_train.flags.writeable


def test_checksums_in_module_match_bundled_files() -> None:
    for filename, sha256 in mnist.FILES.values():
        data = (resources.files("mirrorfit.datasets") / "_data" / filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256


def test_user_directory_is_read(originals: Path, bundled) -> None:
    (_, y_train), (x_test, _) = mnist.load_data(originals)
    np.testing.assert_array_equal(y_train, bundled[0][1])
    np.testing.assert_array_equal(x_test, bundled[1][0])


def test_corrupted_copy_names_file_and_hashes(originals: Path) -> None:
    target = originals / "train-images-idx3-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(mnist.ChecksumError) as info:
        mnist.load_data(originals)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert mnist.FILES["x_train"][1] in message
    assert hashlib.sha256(data).hexdigest() in message


def test_missing_files_are_downloaded(originals: Path, tmp_path: Path, serve, bundled) -> None:
    serve(originals)
    target = tmp_path / "fresh" / "mnist"
    (x_train, _), (_, y_test) = mnist.load_data(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)  # no leftover .part files
    np.testing.assert_array_equal(x_train, bundled[0][0])
    np.testing.assert_array_equal(y_test, bundled[1][1])


def test_download_with_wrong_checksum_leaves_nothing(originals: Path, tmp_path: Path,
                                                     serve) -> None:
    served = tmp_path / "served"
    shutil.copytree(originals, served)
    bad = served / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-10] + b"0123456789")
    serve(served)
    target = tmp_path / "target"
    shutil.copytree(originals, target)
    (target / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(mnist.ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz") as info:
        mnist.load_data(target)
    assert mnist.FILES["y_test"][1] in str(info.value)
    assert sorted(p.name for p in target.iterdir()) == sorted(set(NAMES) - {bad.name})


def test_download_failure_names_the_url(tmp_path: Path, serve) -> None:
    (tmp_path / "empty").mkdir()
    serve(tmp_path / "empty")
    target = tmp_path / "target"
    with pytest.raises(OSError, match=r"train-images-idx3-ubyte\.gz.*404") as info:
        mnist.load_data(target)
    assert mnist.MIRRORS[0] in str(info.value)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(("raw", "message"), [
    (b"not gzip at all", "not a valid gzip file"),
    (gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 12), "expected magic number 0x00000801"),
    (gzip.compress(b"\x00\x00"), "truncated header"),
    (gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02"),
     r"declares shape \(5,\)"),
])
def test_bad_idx_files_are_rejected(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _idx._parse_idx(raw, "labels.gz", ndim=1)


def test_small_idx_file_parses() -> None:
    raw = gzip.compress(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 1, 3))
                        + bytes(range(6)))
    np.testing.assert_array_equal(_idx._parse_idx(raw, "x.gz", ndim=3),
                                  np.arange(6, dtype=np.uint8).reshape(2, 1, 3))


# -- Fashion-MNIST, and telling the two sets apart -----------------------------------------

def _copy_set(folder: Path, bundled: str, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        source = resources.files("mirrorfit.datasets") / bundled / name
        (folder / name).write_bytes(source.read_bytes())
    return folder


def test_fashion_mnist_bundled_files_verify_and_parse() -> None:
    for filename, sha256 in fashion_mnist.FILES.values():
        data = (resources.files("mirrorfit.datasets") / "_data/fashion_mnist" / filename)
        assert hashlib.sha256(data.read_bytes()).hexdigest() == sha256
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert fashion_mnist.CLASS_NAMES[y_test[0]] == "Ankle boot"


def test_mnist_on_fashion_files_says_they_are_fashion_mnist(tmp_path: Path) -> None:
    names = [f for f, _ in fashion_mnist.FILES.values()]
    folder = _copy_set(tmp_path / "fashion", "_data/fashion_mnist", names)
    with pytest.raises(mnist.ChecksumError) as info:
        mnist.load_data(folder)
    message = str(info.value)
    assert "is Fashion-MNIST's train-images-idx3-ubyte.gz, not MNIST's" in message
    assert "mirrorfit.datasets.fashion_mnist.load_data(path)" in message
    assert "downloaded again" not in message
    (x_train, _), _ = fashion_mnist.load_data(folder)  # the advice works
    assert x_train.shape == (60000, 28, 28)


def test_fashion_mnist_on_mnist_files_says_they_are_mnist(originals: Path) -> None:
    with pytest.raises(fashion_mnist.ChecksumError, match=r"is MNIST's .*mnist\.load_data"):
        fashion_mnist.load_data(originals)


def test_another_valid_idx_set_is_not_called_corrupted(originals: Path) -> None:
    labels = originals / "t10k-labels-idx1-ubyte.gz"
    three_labels = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    labels.write_bytes(gzip.compress(three_labels))
    with pytest.raises(mnist.ChecksumError) as info:
        mnist.load_data(originals)
    message = str(info.value)
    assert "valid idx file of shape (3,) but not MNIST's original" in message
    assert "downloaded again" not in message and "path=None" in message
