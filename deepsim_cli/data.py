"""Datasets: ImageFolder / plain folders / tar files (read in place), decoded once into a
uint8 array (N, S, S, 3) and cached; augmentation runs batched on the training device.

Randomness is drawn from explicit torch.Generators so a batch depends only on (seed, step):
resumed runs see exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import math
import os
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .images import load_image, to_uint8
from .paths import check_input
from .utils import rng_seed

_DECODE_VERSION = 2  # bump when decoding changes, so cached arrays are rebuilt
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def _decode(data: bytes, size: int) -> np.ndarray:
    """Encoded image → (size, size, 3) uint8, through the same loader as every other input
    (EXIF, colour modes, centre-square resize), so training and query images match."""
    return to_uint8(load_image(data, size))


def _is_image_name(name: str) -> bool:
    """An image file by its name: a known extension, and not hidden (a leading '.': the temporary
    files of an interrupted write, macOS '._' resource forks), as images.list_images decides."""
    base = Path(name).name
    return Path(base).suffix.lower() in IMAGE_EXTS and not base.startswith(".")


def _folder_images(p: Path) -> list[Path]:
    return sorted(f for f in p.rglob("*") if _is_image_name(f.name) and f.is_file())


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _tar_images(p: Path, read: bool = True, strict: bool | None = None, broken: list | None = None):
    """Yield (member name, bytes or None when not `read`) for the image members of tar `p`, in one
    sequential pass. A tar that ends early (a truncated download, a full disk) yields the images it
    holds and then warns once, naming it; in strict mode (`--strict`), or when it holds no image
    at all, that is one error line instead. `broken` (a list) gets `p` appended when it ends early."""
    from .unreadable import is_strict
    n, total = 0, p.stat().st_size
    try:
        with tarfile.open(p) as tf:
            for m in tf:
                if m.isfile() and _is_image_name(m.name):
                    if m.offset_data + m.size > total:
                        raise tarfile.ReadError(f"unexpected end of data in {m.name}")
                    data = tf.extractfile(m).read() if read else None
                    if read and len(data) != m.size:
                        raise tarfile.ReadError(f"unexpected end of data in {m.name}")
                    yield m.name, data
                    n += 1
            # tarfile ends quietly at a header cut off mid-way: a whole tar has its end-of-archive
            # zero block where the last member ends
            tf.fileobj.seek(tf.offset)
            end = tf.fileobj.read(512)
            if len(end) < 512 or end.count(0) != 512:
                raise tarfile.ReadError("unexpected end of data")
    except _TAR_ERRORS as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split()) or 'unreadable'}"
        if n == 0 or is_strict(strict):
            raise UsageError(f"cannot read tar {p}: {why}" + (f" (after {n} images)" if n else "")) from None
        from .utils import warn
        warn(f"{p} is truncated or corrupt after {n} images ({why}); using those {n}")
        if broken is not None:
            broken.append(p)


def _iter_sources(source: str | os.PathLike, strict: bool | None = None,
                  broken: list | None = None) -> list[tuple[str, callable]]:
    """[(name, read_bytes)] for every image in a dir (recursive) or a tar, sorted by name; hidden
    files are skipped. A truncated tar gives its readable images (see `_tar_images`)."""
    p = Path(source)
    if check_input(p, what="data source") == "folder":
        return [(str(f.relative_to(p)), f.read_bytes) for f in _folder_images(p)]
    if tarfile.is_tarfile(p):
        # one sequential pass: random access into a tar re-reads it from the start
        blobs = {f"{p.name}/{name}": data for name, data in _tar_images(p, strict=strict, broken=broken)}
        return [(n, (lambda b=blobs[n]: b)) for n in sorted(blobs)]
    if p.suffix.lower() in IMAGE_EXTS:
        return [(p.name, p.read_bytes)]
    if p.name.lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise UsageError(f"cannot read tar {p}: it is truncated or not a tar file")
    raise UsageError(f"data source is neither a folder, a tar file nor an image: {p}")


def count_images(source: str | os.PathLike) -> int:
    """How many images a data source holds, reading names only (no image data)."""
    p = Path(source)
    if check_input(p, what="data source") == "folder":
        return len(_folder_images(p))
    if tarfile.is_tarfile(p):
        return sum(1 for _ in _tar_images(p, read=False))
    return 1


def stratified_sample(names: Sequence[str], n: int, seed: int) -> list[int]:
    """Indices of n of `names` drawn at random with `seed`, as evenly over their folders as
    possible (round robin over the folders in a random order, each shuffled), sorted. All of
    them when n ≥ len(names). A tar sorted by class is then covered by class, not by its first N."""
    if n >= len(names):
        return list(range(len(names)))
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(str(Path(name).parent), []).append(i)
    order = [groups[k] for k in sorted(groups)]
    order = [order[j] for j in rng.permutation(len(order))]
    queues = [[g[j] for j in rng.permutation(len(g))] for g in order]
    picked: list[int] = []
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return sorted(picked)


def cache_dir() -> Path:
    """Where decoded-image caches live: $DEEPSIM_CACHE, default ~/.cache/deepsim."""
    return Path(os.environ.get("DEEPSIM_CACHE", Path.home() / ".cache" / "deepsim"))


def source_key(sources: Sequence[str | os.PathLike]) -> list[str]:
    """What identifies the contents of `sources` without reading them: each source's resolved path,
    mtime and size, and for a folder every image file's relative path, mtime and size (a folder's
    own mtime misses files rewritten in place and changes in subfolders). Refuses '-', FIFOs,
    devices and symbolic-link loops with one line, before anything opens them."""
    key_src = []
    for s in sources:
        # a FIFO or device would block tarfile.is_tarfile / read_bytes forever, a symbolic-link loop
        # makes Path.resolve raise RuntimeError: refuse them (one line) before touching the path
        if check_input(s, what="data source") == "stdin":
            raise UsageError("data source '-': standard input is not a folder or a tar file")
        p = Path(s).resolve()
        st = p.stat()
        key_src.append(f"{p}:{st.st_mtime_ns}:{st.st_size}")
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if _is_image_name(f.name) and f.is_file():
                    fs = f.stat()
                    key_src.append(f"{f.relative_to(p)}:{fs.st_mtime_ns}:{fs.st_size}")
    return key_src


def _display(source: str | os.PathLike, name: str) -> str:
    """The path a user recognises for entry `name` of `source` (DIR/x.jpg, DIR/data.tar/x.jpg)."""
    p = Path(source)
    if p.is_dir():
        return os.path.join(os.fspath(source), name)
    if p.suffix.lower() in IMAGE_EXTS and name == p.name:
        return os.fspath(source)
    return os.path.join(os.fspath(p.parent), name) if os.fspath(p.parent) != "." else name


def load_array(sources: Sequence[str | os.PathLike] | str | os.PathLike, size: int, *,
               limit: int | None = None, workers: int | None = None, cache: bool = True,
               progress=None, sample: tuple[int, int] | None = None,
               strict: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode every image of `sources` to a (N, size, size, 3) uint8 array (+ names).

    `limit` keeps the first N files by name; `sample=(n, seed)` instead keeps n files drawn at
    random with the seed, stratified by folder (`stratified_sample`), in name order.

    A file inside a folder or tar that cannot be read is skipped with one warning line (at most
    ten, then a count: `unreadable.Unreadable`); it is an error (UsageError, exit 2) only when
    nothing readable is left, or with `strict` (default: the CLI's `--strict`), which stops at the
    first one. A source that is itself an image file is always an error when unreadable.

    Results are cached in $DEEPSIM_CACHE (default ~/.cache/deepsim) keyed by the sources'
    paths, sizes and mtimes, so a second run starts at once. The cache records the skipped files
    too: a hit repeats their warnings, and in strict mode fails on the first one as decoding would.
    """
    from .unreadable import Unreadable, reason

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    key_src = source_key(sources)
    key = hashlib.sha256(f"{_DECODE_VERSION}|{key_src}|{size}|{limit}|{sample}".encode()).hexdigest()[:16]
    cfile = cache_dir() / f"images-{key}-{size}.npz"
    where = ", ".join(map(str, sources))
    bad = Unreadable(strict)
    if cache:
        hit = _read_cache(cfile, size, limit)
        if hit is not None:
            images, names, skipped = hit
            if all(0 <= si < len(sources) for si, _, _ in skipped):
                for si, name, why in skipped:
                    bad.add(_display(sources[si], name), why)
                bad.report(len(images) + len(skipped), where)
                return images, names
    entries = []  # (name, read_bytes, source index, skippable)
    broken: list = []  # truncated tars: never cached, so the next run reads (and warns) again
    for si, s in enumerate(sources):
        found = _iter_sources(s, strict, broken)
        one_file = len(found) == 1 and not Path(s).is_dir() and not tarfile.is_tarfile(s)
        entries += [(n, read, si, not one_file) for n, read in found]
    if limit:
        entries = entries[:limit]
    if sample is not None:
        entries = [entries[i] for i in stratified_sample([e[0] for e in entries], *sample)]
    if not entries:
        raise UsageError(f"no images found in {where}")
    workers = workers or min(16, os.cpu_count() or 1)
    out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
    failed: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            data = entries[i][1]()
            if not data:
                raise ValueError("file is empty (0 bytes)")  # as load_image says of an empty file
            out[i] = _decode(data, size)
        except Exception as e:  # noqa: BLE001 - one bad file does not stop a long extraction
            failed[i] = reason(e)
            if bad.strict or not entries[i][3]:
                raise _Failed(i) from None

    ex = ThreadPoolExecutor(workers)
    try:
        for k, _ in enumerate(ex.map(work, range(len(entries)))):
            if progress is not None and k % 256 == 0:
                progress(k, len(entries))
    except _Failed as f:
        ex.shutdown(wait=True, cancel_futures=True)  # stop at the first one, in name order
        name, _, si, skippable = entries[f.index]
        bad.add(_display(sources[si], name), failed[f.index], skippable=skippable)
        raise AssertionError("unreachable") from None
    except BaseException:
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    skipped = []
    for i in sorted(failed):
        name, _, si, _ = entries[i]
        bad.add(_display(sources[si], name), failed[i])
        skipped.append((si, name, failed[i]))
    bad.report(len(entries), where)
    if failed:  # move the readable images up, in order (no copy of the array)
        keep = [i for i in range(len(entries)) if i not in failed]
        for j, i in enumerate(keep):
            if i != j:
                out[j] = out[i]
        out = out[:len(keep)]
    names = [e[0] for i, e in enumerate(entries) if i not in failed]
    if cache and not broken:
        _write_cache(cfile, out, names, skipped)
    return out, names


class _Failed(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


# The cache is optional: an unreadable cache file is rebuilt, a cache that cannot be written (full
# disk, $DEEPSIM_CACHE not a folder, no permission) is skipped; each is one warning line, never fatal.

def _read_cache(cfile: Path, size: int, limit: int | None
                ) -> tuple[np.ndarray, list[str], list[tuple[int, str, str]]] | None:
    """The cached (images, names, skipped files as (source index, name, reason)), or None when there
    is none or it is unusable (then rebuilt). Caches written before skipping existed hold none."""
    try:
        if not cfile.is_file():
            return None
    except OSError:
        return None
    try:
        with np.load(cfile, allow_pickle=False) as z:
            images, names = z["images"], [str(n) for n in z["names"]]
            skipped = []
            if "skipped_names" in z.files:
                skipped = [(int(i), str(n), str(r)) for i, n, r in
                           zip(z["skipped_sources"], z["skipped_names"], z["skipped_reasons"], strict=True)]
        ok = (images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (size, size, 3)
              and len(names) == len(images) > 0 and (not limit or len(images) + len(skipped) <= limit))
        if not ok:
            raise ValueError(f"unexpected contents (images {images.dtype} {images.shape}, {len(names)} names)")
        return images, names, skipped
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, KeyError, ValueError, OSError, …
        from .utils import warn
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"corrupt: {type(e).__name__}"
        warn(f"ignoring unreadable cache file {cfile} ({reason}); decoding the images again")
        try:
            cfile.unlink()
        except OSError:
            pass
        return None


def _write_cache(cfile: Path, images: np.ndarray, names: list[str],
                 skipped: Sequence[tuple[int, str, str]] = ()) -> None:
    from .errors import WriteError
    from .utils import atomic_output, warn

    try:
        with atomic_output(cfile) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=images, names=np.array(names),
                         skipped_sources=np.array([k[0] for k in skipped], dtype=np.int64),
                         skipped_names=np.array([k[1] for k in skipped], dtype=str),
                         skipped_reasons=np.array([k[2] for k in skipped], dtype=str))
    except (WriteError, OSError) as e:
        warn(f"{e}; continuing without the image cache ($DEEPSIM_CACHE)")


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of batch `step` of an epoch-wise shuffled stream (a function of seed and step)."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(rng_seed(seed * 1_000_003 + epoch))
    perm = torch.randperm(n, generator=g)
    return perm[k * batch:(k + 1) * batch]


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for step `step` (per-step seeding makes resume exact)."""
    return torch.Generator().manual_seed((seed * 7_919 + step * 104_729 + salt) % (2**63 - 1))


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) float in [-1, 1]."""
    return batch_u8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def random_resized_crop(x: torch.Tensor, out_size: int, g: torch.Generator, *,
                        scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """Batched random-resized-crop + horizontal flip with one affine grid_sample.

    x: (B, 3, H, W) float in [-1, 1] → (B, 3, out_size, out_size).
    """
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=g)
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    r = logr.exp()
    sw = (area * r).sqrt().clamp(max=1.0)   # crop width / image width
    sh = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sw)
    cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - sh)
    sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sw * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    theta = theta.to(x.device, x.dtype)
    # antialias: if the crop is much larger than the output, pre-shrink so grid_sample does not alias
    src = x.shape[-1] * float(sw.min())
    if src > 1.5 * out_size:
        f = max(1, int(src / (1.25 * out_size)))
        if f > 1:
            x = F.avg_pool2d(x, f)
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = 0.3) -> torch.Tensor:
    """Per-image brightness / contrast / saturation jitter on [-1, 1] images.

    Saturation s, contrast c and brightness b compose to one affine map per image,
    c·(s·x + (1 − s)·gray) + (1 − c)·m + b with m the image mean (saturation leaves m unchanged),
    applied in one fused pass (three passes over a 224 px batch cost more than AlexNet in bf16).
    """
    b = x.shape[0]
    dev = x.device
    br = (torch.empty(b, 1, 1, 1).uniform_(-strength, strength, generator=g)).to(dev)
    ct = (1 + torch.empty(b, 1, 1, 1).uniform_(-strength, strength, generator=g)).to(dev)
    sat = (1 + torch.empty(b, 1, 1, 1).uniform_(-strength, strength, generator=g)).to(dev)
    gray = x.mean(1, keepdim=True)
    m = gray.mean((2, 3), keepdim=True)
    shift = torch.addcmul((1 - ct) * m + br, gray, ct * (1 - sat))  # (B, 1, H, W)
    return torch.addcmul(shift, x, ct * sat).clamp_(-1, 1)
