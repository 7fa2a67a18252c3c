"""Tests for deepsim_cli.data: decoding folders / tars into a cached array, seeded batches, crops."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from deepsim_cli import data
from deepsim_cli.data import batch_indices, load_array, random_resized_crop, step_generator, to_float
from deepsim_cli.errors import UsageError

COLOURS = {"b.png": (255, 0, 0), "a.jpg": (0, 255, 0), "sub/c.png": (0, 0, 255), "d.PNG": (255, 255, 0)}


def _write(path, colour, size=(40, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("DEEPSIM_CACHE", str(d))
    return d


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for name, colour in COLOURS.items():
        _write(root / name, colour)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def tar(tmp_path):
    path = tmp_path / "imgs.tar"
    with tarfile.open(path, "w") as tf:
        for name, colour in COLOURS.items():
            buf = io.BytesIO()
            Image.new("RGB", (40, 30), colour).save(buf, format="JPEG" if name.endswith(".jpg") else "PNG")
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
        readme = b"hello"
        info = tarfile.TarInfo("README")
        info.size = len(readme)
        tf.addfile(info, io.BytesIO(readme))
    return path


def _check_colours(arr, names, prefix=""):
    assert arr.dtype == np.uint8 and arr.shape == (4, 16, 16, 3)
    want_names = sorted(COLOURS)
    assert names == [prefix + n for n in want_names]
    for img, n in zip(arr, want_names):
        mean = img.reshape(-1, 3).mean(0)
        assert np.abs(mean - np.array(COLOURS[n])).max() < 6, (n, mean)


def test_load_folder(folder, cache):
    arr, names = load_array(folder, 16)
    _check_colours(arr, names)
    assert len(list(cache.glob("images-*.npz"))) == 1


def test_load_tar(tar):
    arr, names = load_array(tar, 16)
    _check_colours(arr, names, prefix="imgs.tar/")


def test_several_sources_and_limit(folder, tar):
    arr, names = load_array([folder, tar], 8)
    assert arr.shape == (8, 8, 8, 3) and len(names) == 8
    arr, names = load_array([folder, tar], 8, limit=3)
    assert arr.shape == (3, 8, 8, 3) and names == sorted(COLOURS)[:3]


def test_short_side_resize_and_centre_crop(tmp_path):
    # left third red, middle third green, right third blue: the centre square is mostly green
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, :20, 0] = 255
    img[:, 20:40, 1] = 255
    img[:, 40:, 2] = 255
    Image.fromarray(img).save(tmp_path / "wide.png")
    arr, _ = load_array(tmp_path / "wide.png", 10)
    assert arr.shape == (1, 10, 10, 3)
    assert arr[0, :, 2:8, 1].min() > 200 and arr[0, :, 2:8, [0, 2]].max() < 50


def test_cache_hit_on_second_call(folder, cache, monkeypatch):
    a, na = load_array(folder, 16)
    files = list(cache.glob("images-*.npz"))
    assert len(files) == 1

    def no_decoding(*_a, **_k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_decode", no_decoding)
    b, nb = load_array(folder, 16)
    assert np.array_equal(a, b) and list(map(str, nb)) == na
    # another size is another cache entry, not a hit
    with pytest.raises(UsageError):
        load_array(folder, 8)
    # cache=False never reads the cache
    with pytest.raises(UsageError):
        load_array(folder, 16, cache=False)


def test_cache_sees_a_replaced_file(folder):
    a, _ = load_array(folder, 16)
    # same name, new content: the folder's own mtime does not change when a file is rewritten
    st = os.stat(folder)
    _write(folder / "sub" / "c.png", (255, 255, 255))
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    b, names = load_array(folder, 16)
    i = names.index("sub/c.png")
    assert b[i].min() > 240, "stale cache: the rewritten image was not decoded again"
    assert np.array_equal(np.delete(a, i, 0), np.delete(b, i, 0))


def test_corrupt_image(folder, capsys):
    """A corrupt file in a folder is skipped with a warning naming it; strict mode fails on it."""
    (folder / "e.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    a, names = load_array(folder, 16, cache=False)
    assert "e.jpg" not in names and len(a) == len(names) > 0
    assert "e.jpg" in capsys.readouterr().err
    with pytest.raises(UsageError) as e:
        load_array(folder, 16, cache=False, strict=True)
    msg = str(e.value)
    assert "e.jpg" in msg and "\n" not in msg


def test_missing_and_empty(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_array(tmp_path / "nope", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        load_array(tmp_path / "empty", 16)
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(UsageError, match="neither"):
        load_array(tmp_path / "x.bin", 16)


# ---------------------------------------------------------------------------------- batches


def test_batch_indices_deterministic():
    a = batch_indices(100, 8, 5, seed=3)
    assert torch.equal(a, batch_indices(100, 8, 5, seed=3))
    assert not torch.equal(a, batch_indices(100, 8, 5, seed=4))
    assert not torch.equal(a, batch_indices(100, 8, 6, seed=3))
    assert a.shape == (8,)


@pytest.mark.parametrize("n, batch", [(12, 3), (10, 3), (64, 8)])
def test_batch_indices_cover_an_epoch_without_repeats(n, batch):
    per_epoch = n // batch
    for epoch in range(2):
        idx = torch.cat([batch_indices(n, batch, epoch * per_epoch + k, seed=0) for k in range(per_epoch)])
        assert len(idx) == per_epoch * batch
        assert len(set(idx.tolist())) == len(idx), "an index repeats within an epoch"
        assert set(idx.tolist()) <= set(range(n))
        if n % batch == 0:
            assert sorted(idx.tolist()) == list(range(n))
    # the next epoch is shuffled differently
    e0 = torch.cat([batch_indices(n, batch, k, 0) for k in range(per_epoch)])
    e1 = torch.cat([batch_indices(n, batch, per_epoch + k, 0) for k in range(per_epoch)])
    assert not torch.equal(e0, e1)


def test_step_generator_is_a_function_of_seed_and_step():
    a = torch.rand(4, generator=step_generator(1, 7))
    assert torch.equal(a, torch.rand(4, generator=step_generator(1, 7)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(1, 8)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(2, 7)))
    assert not torch.equal(a, torch.rand(4, generator=step_generator(1, 7, salt=1)))


def test_to_float_range_and_layout():
    u8 = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    x = to_float(u8)
    assert x.shape == (1, 3, 1, 1)
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]))


# ---------------------------------------------------------------------------------- crops


def _batch(n=4, size=36):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_random_resized_crop_shape_and_determinism():
    x = _batch()
    a = random_resized_crop(x, 32, torch.Generator().manual_seed(5))
    b = random_resized_crop(x, 32, torch.Generator().manual_seed(5))
    c = random_resized_crop(x, 32, torch.Generator().manual_seed(6))
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= -1 - 1e-5 and a.max() <= 1 + 1e-5
    # each image is cropped differently
    assert random_resized_crop(x, 16, torch.Generator().manual_seed(5)).shape == (4, 3, 16, 16)


def test_random_resized_crop_full_view_is_identity():
    x = _batch(2, 32)
    out = random_resized_crop(x, 32, torch.Generator().manual_seed(0), scale=(1.0, 1.0),
                              ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_random_resized_crop_flip():
    # a left-dark / right-bright image: a flipped full view is the mirror image
    x = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(8, 3, 32, 32).contiguous()
    out = random_resized_crop(x, 32, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = [bool(o[0, 0, 0] > o[0, 0, -1]) for o in out]
    assert any(flipped) and not all(flipped)
    for o, f in zip(out, flipped):
        torch.testing.assert_close(o, x[0].flip(-1) if f else x[0], atol=1e-5, rtol=0)
