"""Tests for deepsim_cli.checkpoint: safetensors + string metadata, strict loading, never unpickling."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from deepsim_cli import __version__
from deepsim_cli.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_state_dict_strict,
    read_metadata,
    save_checkpoint,
    sha256_file,
    upgrade_metadata,
)
from deepsim_cli.errors import UsageError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(4, 3, generator=g),
        "layer.bias": torch.randn(4, generator=g),
        "conv.weight": torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64),
        "counter": torch.tensor([7, 8, 9], dtype=torch.int64),
    }


def _save(path, **kw):
    args = dict(kind="generator", config={"b": 2, "a": [1, 2], "nested": {"x": 0.5}}, encoder="alexnet",
                layer="fc6", encoder_sha256="ab" * 32, train_steps=123, metrics={"psnr": 17.5},
                extra={"note": "hello, wörld", "d_paused": "1"})
    args.update(kw)
    return save_checkpoint(path, _tensors(), **args)


def _one_line_usage_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, f"message should be one line: {msg!r}"
    return msg


# ------------------------------------------------------------------------------ round trip


def test_round_trip_tensors_and_metadata(tmp_path):
    path = _save(tmp_path / "g.safetensors")
    ck = load_checkpoint(path)
    want = _tensors()
    assert set(ck.tensors) == set(want)
    for k, v in want.items():
        assert ck.tensors[k].dtype == v.dtype, k
        assert torch.equal(ck.tensors[k], v), k
    assert ck.kind == "generator"
    assert ck.config == {"b": 2, "a": [1, 2], "nested": {"x": 0.5}}
    assert ck.encoder == "alexnet"
    assert ck.layer == "fc6"
    assert ck.encoder_sha256 == "ab" * 32
    assert ck.train_steps == 123
    assert ck.metrics == {"psnr": 17.5}
    assert ck.extra == {"note": "hello, wörld", "d_paused": "1"}
    assert ck.path == path

    meta = read_metadata(path)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["deepsim_version"] == __version__
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["config"]) == ck.config


def test_dtype_cast_to_float16_leaves_integers(tmp_path):
    path = save_checkpoint(tmp_path / "h.safetensors", _tensors(), kind="generator", dtype=torch.float16)
    ck = load_checkpoint(path)
    for k, v in _tensors().items():
        if v.is_floating_point():
            assert ck.tensors[k].dtype == torch.float16, k
            assert torch.equal(ck.tensors[k], v.to(torch.float16)), k
        else:
            assert ck.tensors[k].dtype == v.dtype
            assert torch.equal(ck.tensors[k], v)


def test_non_contiguous_and_grad_tensors_are_saved(tmp_path):
    w = torch.randn(3, 5, requires_grad=True)
    t = {"wt": w.t(), "w": w * 2}
    path = save_checkpoint(tmp_path / "nc.safetensors", t, kind="x")
    ck = load_checkpoint(path)
    assert torch.equal(ck.tensors["wt"], w.detach().t())
    assert torch.equal(ck.tensors["w"], w.detach() * 2)


def test_extra_key_clash_is_refused(tmp_path):
    with pytest.raises(ValueError, match="clashes"):
        save_checkpoint(tmp_path / "x.safetensors", _tensors(), kind="x", extra={"layer": "fc7"})


def test_upgrade_metadata_fills_missing_fields():
    meta = upgrade_metadata({"format_version": "0", "kind": "generator"})
    assert meta["config"] == "{}" and meta["metrics"] == "{}" and meta["train_steps"] == "0"
    assert meta["encoder"] == meta["layer"] == meta["encoder_sha256"] == meta["deepsim_version"] == ""


def test_old_file_with_minimal_metadata_loads(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format_version": "0", "kind": "generator"})
    ck = load_checkpoint(path, kind="generator")
    assert ck.config == {} and ck.metrics == {} and ck.train_steps == 0 and ck.encoder == ""
    assert torch.equal(ck.tensors["w"], torch.ones(2))


# ------------------------------------------------------------------------------ reproducibility


def test_save_is_byte_reproducible(tmp_path):
    # safetensors writes its metadata map in hash order; save_checkpoint must canonicalise it
    # (many keys make an accidental match of two random orders practically impossible)
    extra = {f"key{i:02d}": f"value {i}" for i in range(20)}
    hashes = set()
    for i in range(3):
        p = _save(tmp_path / f"r{i}.safetensors", extra=extra)
        hashes.add(sha256_file(p))
    assert len(hashes) == 1
    ck = load_checkpoint(tmp_path / "r0.safetensors")
    assert ck.extra == extra
    for k, v in _tensors().items():
        assert torch.equal(ck.tensors[k], v)


def test_header_is_canonical_json(tmp_path):
    p = _save(tmp_path / "c.safetensors")
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0  # safetensors pads the header to 8-byte alignment
    text = raw[8:8 + n].decode("utf-8")
    header = json.loads(text)
    assert text.rstrip(" ") == json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])


def test_header_rewrite_that_grows_copies_the_data(tmp_path, monkeypatch):
    # force the rare branch where the canonical header is longer than the one safetensors wrote
    from deepsim_cli import checkpoint

    real_dumps = json.dumps

    def longer(obj, **kw):
        kw.pop("separators", None)
        return real_dumps(obj, indent=2, **kw)

    monkeypatch.setattr(checkpoint.json, "dumps", longer)
    p = _save(tmp_path / "grow.safetensors")
    monkeypatch.undo()
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and b"\n  " in raw[8:8 + n]
    ck = load_checkpoint(p)
    for k, v in _tensors().items():
        assert torch.equal(ck.tensors[k], v), k
    assert ck.metrics == {"psnr": 17.5}
    assert not list(tmp_path.glob("*.hdr")) and not list(tmp_path.glob(".*.tmp*"))


def test_save_is_atomic_on_failure(tmp_path):
    path = _save(tmp_path / "a.safetensors")
    before = sha256_file(path)
    with pytest.raises(Exception):
        # a tensor safetensors cannot store (shared memory between two names) fails mid-save
        shared = torch.zeros(4)
        save_checkpoint(path, {"a": shared, "b": shared[:2]}, kind="x")
    assert sha256_file(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


# ------------------------------------------------------------------------------ refusals


def test_kind_mismatch_is_refused(tmp_path):
    path = _save(tmp_path / "g.safetensors", kind="train-state")
    with pytest.raises(UsageError) as e:
        load_checkpoint(path, kind="generator")
    msg = _one_line_usage_error(e)
    assert "'generator'" in msg and "'train-state'" in msg
    assert load_checkpoint(path, kind="train-state").kind == "train-state"


def test_missing_file(tmp_path):
    with pytest.raises(UsageError) as e:
        load_checkpoint(tmp_path / "nope.safetensors")
    assert "not found" in _one_line_usage_error(e)
    with pytest.raises(UsageError):
        load_checkpoint(tmp_path)  # a directory is not a checkpoint either


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n" * 10, b"\xff" * 64,
                                     (2 ** 40).to_bytes(8, "little") + b"{}"])
def test_not_safetensors(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(UsageError) as e:
        load_checkpoint(path)
    _one_line_usage_error(e)


def test_truncated_file(tmp_path):
    path = _save(tmp_path / "t.safetensors")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for cut in (4, 8 + n // 2, 8 + n + 10, len(raw) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(UsageError) as e:
            load_checkpoint(bad)
        _one_line_usage_error(e)


def test_plain_safetensors_without_deepsim_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(UsageError) as e:
        load_checkpoint(path)
    assert "not a deepsim checkpoint" in _one_line_usage_error(e)


def test_bad_json_config(tmp_path):
    path = tmp_path / "badjson.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format_version": "1", "kind": "x", "config": "{nope"})
    with pytest.raises(UsageError) as e:
        load_checkpoint(path)
    _one_line_usage_error(e)


class _Boom:
    """Unpickling this would create a marker file: the test checks it never exists."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_never_unpickles(tmp_path, how):
    marker = tmp_path / "UNPICKLED"
    boom = _Boom()
    boom.marker = str(marker)
    path = tmp_path / "model.pth"
    if how == "torch.save":
        torch.save({"w": torch.ones(2), "evil": boom}, path)
    else:
        path.write_bytes(pickle.dumps({"evil": boom}))
    renamed = path.rename(tmp_path / "model.safetensors")
    with pytest.raises(UsageError) as e:
        load_checkpoint(renamed)
    _one_line_usage_error(e)
    with pytest.raises(UsageError):
        read_metadata(renamed)
    assert not marker.exists()


# ------------------------------------------------------------------------------ strict loading


class _Net(nn.Module):
    def __init__(self, hidden: int = 4):
        super().__init__()
        self.layer = nn.Linear(3, hidden)
        self.out = nn.Linear(hidden, 2)


def test_load_state_dict_strict_ok_and_adapts_dtype():
    src, dst = _Net(), _Net()
    sd = {k: v.half() for k, v in src.state_dict().items()}
    load_state_dict_strict(dst, sd, "net")
    for k, v in dst.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, sd[k].float())


def test_load_state_dict_strict_shape_mismatch():
    sd = _Net(hidden=5).state_dict()
    dst = _Net(hidden=4)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(UsageError) as e:
        load_state_dict_strict(dst, sd, "net")
    msg = _one_line_usage_error(e)
    assert "shape" in msg and "net" in msg
    for k, v in dst.state_dict().items():  # nothing half-loaded
        assert torch.equal(v, before[k])


def test_load_state_dict_strict_missing_and_unexpected_keys():
    dst = _Net()
    sd = dict(dst.state_dict())
    del sd["out.bias"]
    with pytest.raises(UsageError) as e:
        load_state_dict_strict(dst, sd, "net")
    assert "out.bias" in _one_line_usage_error(e)
    sd = dict(dst.state_dict())
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(UsageError) as e:
        load_state_dict_strict(dst, sd, "net")
    assert "extra.weight" in _one_line_usage_error(e)


def test_checkpoint_into_module_round_trip(tmp_path):
    src = _Net()
    path = save_checkpoint(tmp_path / "n.safetensors", src.state_dict(), kind="net", dtype=torch.float16)
    dst = _Net()
    load_state_dict_strict(dst, load_checkpoint(path, kind="net").tensors, "net")
    x = torch.randn(5, 3)
    torch.testing.assert_close(dst.out(dst.layer(x)), src.out(src.layer(x)), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_all_finite_finds_any_nan_or_inf(dtype):
    from deepsim_cli.checkpoint import all_finite

    t = torch.randn(37, 41).to(dtype)
    assert all_finite(t)
    for pos in (0, 700, t.numel() - 1):
        for bad in (float("nan"), float("inf"), -float("inf")):
            u = t.clone()
            u.view(-1)[pos] = bad
            assert not all_finite(u), (pos, bad)
    assert all_finite(torch.empty(0, 3, dtype=dtype)) and all_finite(torch.arange(5))
