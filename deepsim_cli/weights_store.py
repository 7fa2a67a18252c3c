"""Where the shipped weight files are found: one resolver for every loader (no torch import).

A shipped file is named by its file name in the package's manifest (resources/weights.json: bytes,
sha256, kind, licence, remote location). `resolve(name)` looks, in order:

1. an explicit path (``--weights FILE``), returned as given;
2. ``$DEEPSIM_WEIGHTS``, a folder that *replaces* the source checkout's weights/ (so a test or a
   user can point deepsim at a folder with some files missing);
3. otherwise the source checkout's weights/ (present when running from a clone);
4. the user cache, ``$XDG_CACHE_HOME/deepsim/weights`` (default ``~/.cache/deepsim/weights``);
5. a download into the cache — only when asked for (``deepsim weights download NAME``) or when
   ``$DEEPSIM_WEIGHTS_URL`` names a server, and never when ``DEEPSIM_OFFLINE=1`` or
   ``HF_HUB_OFFLINE=1``: deepsim never contacts the network on its own;
6. otherwise one error line naming the file, the folders searched and the command that fetches it.

Downloads are streamed over HTTP(S) with urllib into a temporary file beside the target, checked
against the manifest's size and sha256, and renamed into place atomically: a failed or corrupt
download leaves nothing under the file's name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import DeepsimError, UsageError

__all__ = ["MANIFEST_PATH", "MissingWeights", "manifest", "entry", "names", "checkout_dir", "cache_dir",
           "search_dirs", "weights_dir", "find", "resolve", "optional", "offline", "base_url", "url_for", "fetch",
           "with_requirements", "identity_sha256", "rebuild_single_file", "sha256_file", "download"]

MANIFEST_PATH = Path(__file__).resolve().parent / "resources" / "weights.json"
_OFFLINE_VARS = ("DEEPSIM_OFFLINE", "HF_HUB_OFFLINE")


class MissingWeights(UsageError):
    """A shipped weights file is in none of the searched folders (exit code 2)."""


@functools.lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    """The parsed manifest: {"remote": {...}, "files": {name: {...}}}."""
    try:
        return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DeepsimError(f"cannot read the weights manifest {MANIFEST_PATH}: {e}") from None


def entry(name: str) -> dict[str, Any] | None:
    """The manifest entry of a shipped file, or None for a file deepsim does not ship."""
    return manifest()["files"].get(name)


def encoder_file(encoder: str, sha256: str) -> str | None:
    """The shipped weights file of `encoder` whose identity is `sha256` (its own sha256, or the one a
    sharded index declares): what a generator's recorded encoder_sha256 names. None if none ships."""
    for name, e in manifest()["files"].items():
        if (e.get("encoder") == encoder and e.get("kind") in ("encoder", "encoder-index")
                and sha256 in (e.get("sha256"), e.get("identity_sha256"))):
            return name
    return None


def names() -> list[str]:
    """Every shipped file name, in manifest order."""
    return list(manifest()["files"])


def checkout_dir() -> Path | None:
    """weights/ of the source checkout this package runs from (None for an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    d = root / "weights"
    return d if (root / "pyproject.toml").is_file() and d.is_dir() else None


def cache_dir() -> Path:
    """The user cache: $XDG_CACHE_HOME/deepsim/weights, default ~/.cache/deepsim/weights."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "deepsim" / "weights"


def search_dirs() -> list[Path]:
    """The folders searched, in order: $DEEPSIM_WEIGHTS or the checkout's weights/, then the cache."""
    env = os.environ.get("DEEPSIM_WEIGHTS")
    first = Path(env).expanduser() if env else checkout_dir()
    dirs = [first] if first is not None else []
    cache = cache_dir()
    if all(cache != d for d in dirs):
        dirs.append(cache)
    return dirs


def weights_dir() -> Path:
    """The main weights folder: $DEEPSIM_WEIGHTS, else the checkout's weights/, else the cache."""
    return search_dirs()[0]


def find(name: str) -> Path | None:
    """The first searched folder's `name` that exists (no download), or None."""
    for d in search_dirs():
        p = d / name
        if p.is_file():
            return p
    return None


def offline() -> bool:
    """True when DEEPSIM_OFFLINE or HF_HUB_OFFLINE is set to anything but '', 0, false, no, off."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no", "off") for v in _OFFLINE_VARS)


def _auto_download() -> bool:
    # only with a server named by the user: the default remote is contacted on explicit request only
    return bool(os.environ.get("DEEPSIM_WEIGHTS_URL")) and not offline()


def not_found_message(name: str) -> str:
    """The one-line error for a weights file that no search folder holds, saying how to get it."""
    where = ", ".join(str(d) for d in search_dirs())
    if entry(name) is None:
        return f"weights file {name} not found (searched {where}); deepsim ships no file of that name"
    return (f"weights file {name} not found (searched {where}); fetch it with "
            f"`deepsim weights download {name}` or set DEEPSIM_WEIGHTS to a folder that has it")


def resolve(name: str, explicit: str | os.PathLike | None = None, *, download: bool | None = None) -> Path:
    """The path of a shipped weights file (see the module docstring for the search order).

    Args:
        name: file name as in the manifest, e.g. "alexnet-pool5-generator.safetensors".
        explicit: a path the user gave (returned unchanged; the caller reports it if missing).
        download: fetch a missing file into the cache; None = only if $DEEPSIM_WEIGHTS_URL is set
            (never when offline).

    Raises:
        MissingWeights: one line naming the file, the folders searched and the fetch command.
    """
    if explicit is not None:
        return Path(explicit)
    found = find(name)
    if found is not None:
        return found
    if (_auto_download() if download is None else download) and entry(name) is not None:
        for req in with_requirements([name]):
            if req != name and find(req) is None:
                fetch(req)
        return fetch(name)
    raise MissingWeights(not_found_message(name))


def optional(name: str) -> Path | None:
    """Like `resolve` for a file a loader can do without (None instead of an error)."""
    try:
        return resolve(name)
    except MissingWeights:
        return None


def with_requirements(wanted: Iterable[str]) -> list[str]:
    """`wanted` plus the files each needs (an index's shards), each once, requirements first."""
    out: list[str] = []

    def add(n: str) -> None:
        e = entry(n) or {}
        for r in e.get("requires", []):
            if r not in out and r != n:
                add(r)
        if n not in out:
            out.append(n)

    for n in wanted:
        add(n)
    return out


def identity_sha256(path: str | os.PathLike) -> str | None:
    """The identity a sharded index declares for the network it assembles: "identity_sha256" in its
    metadata, the sha256 of the single file it replaces (checkpoints trained on that file record it
    as encoder_sha256, so they still load). Honoured only when every shard's sha256 is recorded
    (load_sharded checks them), so the tensors are those of that file; `rebuild_single_file` proves
    it byte for byte. None for other files."""
    p = Path(path)
    if not p.name.endswith(".safetensors.index.json"):
        return None
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
        meta = spec.get("metadata") or {}
        shards = set(spec["weight_map"].values())
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    ident = meta.get("identity_sha256")
    if not (isinstance(ident, str) and len(ident) == 64) or not shards <= set(meta.get("shard_sha256") or {}):
        return None
    return ident


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def rebuild_single_file(index: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Rebuild, byte for byte, the single safetensors file a sharded index replaces (its metadata
    holds that file's header, "identity_header", and sha256, "identity_sha256") from the shards
    beside the index; written atomically and checked against the sha256 (DeepsimError if not)."""
    index, out = Path(index), Path(out)
    spec = json.loads(index.read_text(encoding="utf-8"))
    meta, weight_map = spec["metadata"], spec["weight_map"]
    text = meta["identity_header"].encode("utf-8")
    header = json.loads(text)
    order = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")
    shards: dict[str, tuple[dict[str, Any], int]] = {}
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            for block in (struct.pack("<Q", len(text)), text):
                f.write(block)
                h.update(block)
            pos = 0
            for start, k in order:
                want = header[k]
                shard = index.parent / weight_map[k]
                if weight_map[k] not in shards:
                    shards[weight_map[k]] = _safetensors_header(shard)
                sh, base = shards[weight_map[k]]
                got = sh[k]
                if (got["dtype"], got["shape"]) != (want["dtype"], want["shape"]) or start != pos:
                    raise DeepsimError(f"{index}: {k} in {shard.name} is not the tensor {out.name} held")
                a, b = got["data_offsets"]
                with open(shard, "rb") as s:
                    s.seek(base + a)
                    data = s.read(b - a)
                f.write(data)
                h.update(data)
                pos += len(data)
        if h.hexdigest() != meta["identity_sha256"]:
            raise DeepsimError(f"{index}: the shards rebuild a file with sha256 {h.hexdigest()[:12]}…, "
                               f"not {meta['identity_sha256'][:12]}…")
        os.replace(tmp_name, out)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return out


def base_url() -> str:
    """Where files are fetched from: $DEEPSIM_WEIGHTS_URL, else the manifest's pinned remote."""
    url = os.environ.get("DEEPSIM_WEIGHTS_URL") or manifest()["remote"]["base_url"]
    return url if url.endswith("/") else url + "/"


def url_for(name: str) -> str:
    """Download URL of a shipped weights file: `base_url()` ($DEEPSIM_WEIGHTS_URL or the manifest's pinned remote) + the quoted name."""
    return base_url() + urllib.parse.quote(name)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in `chunk`-byte blocks (torch-free: the one hasher of
    weight files; checkpoint.sha256_file is this)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, *, dest_dir: str | os.PathLike | None = None, timeout: float = 60.0,
          on_bytes: Callable[[int, int], None] | None = None) -> Path:
    """Download one shipped file into `dest_dir` (default: the user cache) and return its path.

    A file already there with the manifest's sha256 is kept. The bytes go to a temporary file in
    the same folder, are checked (size, sha256) and renamed into place; on any failure nothing is
    left and one DeepsimError line says why.

    Args:
        on_bytes: called with (bytes so far, total bytes) as the download proceeds.
    """
    e = entry(name)
    if e is None:
        raise UsageError(f"{name} is not a shipped weights file (see `deepsim weights`)")
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    final = dest / name
    if final.is_file() and final.stat().st_size == e["bytes"] and sha256_file(final) == e["sha256"]:
        return final
    if offline():
        raise DeepsimError(f"cannot download {name}: offline (DEEPSIM_OFFLINE or HF_HUB_OFFLINE is set)")
    url = url_for(name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DeepsimError(f"cannot download {name}: cannot create {dest}: {err.strerror or err}") from None
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        n = 0
        req = urllib.request.Request(url, headers={"User-Agent": "deepsim-cli"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                n += len(block)
                if n > e["bytes"]:
                    raise DeepsimError(f"download of {name} from {url} is larger than the {e['bytes']:,} bytes "
                                       "the manifest records; nothing was saved")
                h.update(block)
                out.write(block)
                if on_bytes is not None:
                    on_bytes(n, e["bytes"])
            out.flush()
            os.fsync(out.fileno())
        if n != e["bytes"]:
            raise DeepsimError(f"download of {name} from {url} is incomplete ({n:,} of {e['bytes']:,} bytes); "
                               "nothing was saved")
        if h.hexdigest() != e["sha256"]:
            raise DeepsimError(f"download of {name} from {url} does not match its sha256 (got {h.hexdigest()[:12]}…, "
                               f"expected {e['sha256'][:12]}…); nothing was saved")
        os.replace(tmp, final)
    except DeepsimError:
        raise
    except urllib.error.HTTPError as err:
        raise DeepsimError(f"cannot download {name} from {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DeepsimError(f"cannot download {name} from {url}: {err.reason}") from None
    except Exception as err:  # http.client.IncompleteRead, timeouts, a full disk, …
        why = " ".join(str(err).split()) or type(err).__name__
        raise DeepsimError(f"cannot download {name} from {url}: {type(err).__name__}: {why}; nothing was saved") \
            from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def download(wanted: Iterable[str] | None = None, *,
             on_fetched: Callable[[str, Path], None] | None = None) -> list[dict[str, Any]]:
    """Make the shipped files `wanted` (None: all of them), and what they require (an index's
    shards), present: a file already found with the manifest's sha256 is kept, any other is
    fetched into the cache (sha256-checked; see fetch). UsageError naming unknown files before
    anything is fetched. `on_fetched(name, path)` after each download. Returns one
    {"file", "path", "downloaded"} record per file."""
    wanted = list(names() if wanted is None else wanted)
    unknown = [n for n in wanted if entry(n) is None]
    if unknown:
        raise UsageError(f"not a shipped weights file: {', '.join(unknown)} (see `deepsim weights`)")
    results = []
    for name in with_requirements(wanted):
        have = find(name)
        if have is not None and sha256_file(have) == entry(name)["sha256"]:
            results.append({"file": name, "path": str(have), "downloaded": False})
            continue
        path = fetch(name)  # any failure is one line; nothing is left under the name
        if on_fetched is not None:
            on_fetched(name, path)
        results.append({"file": name, "path": str(path), "downloaded": True})
    return results
