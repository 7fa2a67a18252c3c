"""Weights v2 on a lent GPU: fc6 / fc7 / fc8 generators and the two VAEs on AlexNet head v2, plus a
pool5 continuation, trained side by side on one GPU within one device command.

The device tool carries at most 64 MiB per call (the tracked tree included), and head v2 alone is
117 MB, so the inputs travel in pieces over several calls to the same warm machine. First take the
big tracked folders out of what travels (the tree left is ~1.5 MB), and put them back afterwards:

    git rm -r -q --cached weights benchmarks/figures && printf '/weights/\n/benchmarks/figures/\n' >> .git/info/exclude
    ...device calls...
    git reset -q weights benchmarks/figures && sed -i '/^\/weights\/$/d;/^\/benchmarks\/figures\/$/d' .git/info/exclude

    for s in imagenette-160-train extra-160-train; do   # here: the data at 144 px, JPEG 85
        python tools/pack_for_device.py ../shared/data/$s.tar .carry/$s-144q85.tar --size 144 --quality 85; done
    python tools/device_v2.py pack --out .carry/v2 --piece-mb 60   # here: pieces p00-of-04 … p03-of-04
    # device call k (k < last), carry [".carry/v2/pK-of-N"]:  python3 tools/device_v2.py stage .carry/v2/pK-of-N
    # last call, carry the last piece:  python3 tools/device_v2.py stage .carry/v2/p03-of-04 && \
    #     python3 tools/device_v2.py main --minutes 8.5 --fetch $OUT      (timeout_s: minutes·60 + 30)
    # next call at once (no carry), for what did not fit:  python3 tools/device_v2.py more --fetch $OUT

`main` joins the pieces, checks every file's sha256 against the pack's list, puts the weights under
weights/ of the device's checkout and the data under /root/v2/data, decodes the data once (the
image cache), then runs one `deepsim train` process per generator (each with --time-limit) and packs
each run's generator (float16), stats, config, first and last grid and logs into ≤ 16 MB pieces
under --fetch (the device tool's return limits). Reassemble here with
`cat gens.part* > gens.tar && tar -xf gens.tar`.

Head v2 is stored float16; the pack sends each shard's odd bytes (sign + exponent, compressible)
zlib-compressed and its even bytes raw, which saves ~15 % and is exact (sha256-checked).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGE = Path(os.environ.get("DEEPSIM_V2_STAGE", "/root/v2/stage"))
WORK = Path(os.environ.get("DEEPSIM_V2_WORK", "/root/v2"))
DEVICE = os.environ.get("DEEPSIM_JOB_DEVICE", "cuda")

WEIGHTS = ["alexnet-conv.safetensors", "alexnet-pool5-generator.safetensors",
           "alexnet-head-v2.safetensors.index.json"]
HEAD_SHARDS = ["alexnet-head-v2-00001-of-00002.safetensors", "alexnet-head-v2-00002-of-00002.safetensors"]
DATA = ["imagenette-160-train-144q85.tar", "extra-160-train-144q85.tar"]

HEAD = "weights/alexnet-head-v2.safetensors.index.json"
COMMON = ["--data", "{data}/imagenette-160-train-144q85.tar", "--data", "{data}/extra-160-train-144q85.tar",
          "--image-size", "128", "--load-size", "144", "--g-width", "0.5", "--comparator-size", "128",
          "--batch", "64", "--w-img", "2.0", "--steps", "10000000", "--grid-every", "1000",
          "--ckpt-every", "500", "--log-every", "100"]

def _fc(layer: str) -> list[str]:
    # the RESULTS "fc7 generator v3" recipe (the v2 attempt's with --d-shift 4) at batch 64, on head
    # v2, bridged from the shipped pool5 generator
    return ["--layer", layer, "--encoder-weights", HEAD, "--img-warmup", "150", "--d-shift", "4",
            "--init-generator", "weights/alexnet-pool5-generator.safetensors", "--bridge-steps", "500"]


# VAE v2 (issue 21 item 2): the shipped VAE recipe (frozen conv1-fc6 encoder, decoder bridged from
# pool5) on head v2 and the broad data with on-the-fly crops; the squared-error baseline beside it
_VAE = ["--model", "vae", "--vae-encoder", "frozen", "--encoder-weights", HEAD, "--w-kl", "3e-5",
        "--init-generator", "weights/alexnet-pool5-generator.safetensors", "--bridge-steps", "500"]
RUNS = {
    "fc6": _fc("fc6"), "fc7": _fc("fc7"), "fc8": _fc("fc8"),
    # the shipped pool5 v2 recipe continued (no head needed)
    "pool5": ["--layer", "pool5", "--upsample", "resize", "--img-warmup", "0",
              "--init-generator", "weights/alexnet-pool5-generator.safetensors"],
    "vae": _VAE + ["--img-warmup", "150"],
    "vae-se": _VAE + ["--loss", "img"],
}
# what one device call can bring back: 4 pieces of 16 MB (the tool's limit is 64 MiB a call);
# `more --from 4` in the next call (machine still warm) returns the rest
PIECES_PER_CALL = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- here: pack the inputs into pieces

def pack(out: Path, piece_mb: float, data_dir: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("p*-of-*"):
        old.unlink()
    buf = io.BytesIO()
    sums = {}
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name: str, blob: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
        for name in WEIGHTS:
            b = (REPO / "weights" / name).read_bytes()
            sums[f"weights/{name}"] = sha256(b)
            add(f"weights/{name}", b)
        for name in HEAD_SHARDS:
            b = (REPO / "weights" / name).read_bytes()
            assert len(b) % 2 == 0
            sums[f"weights/{name}"] = sha256(b)
            add(f"planes/{name}.lo", b[0::2])
            add(f"planes/{name}.hi.z", zlib.compress(b[1::2], 6))
        for name in DATA:
            b = (data_dir / name).read_bytes()
            sums[f"data/{name}"] = sha256(b)
            add(f"data/{name}.z", zlib.compress(b, 1))  # tar headers and padding: ~10 % of a tar of small JPEGs
        add("sums.json", json.dumps(sums, indent=1).encode())
    blob = buf.getvalue()
    step = int(piece_mb * 1e6)
    total = -(-len(blob) // step)
    for i in range(0, len(blob), step):
        (out / f"p{i // step:02d}-of-{total:02d}").write_bytes(blob[i:i + step])
    print(f"{len(blob) / 1e6:.1f} MB in {total} pieces of ≤ {piece_mb} MB under {out}")


# ---------------------------------------------------------------- device: stage, join, train, pack

def stage(piece: Path) -> None:
    STAGE.mkdir(parents=True, exist_ok=True)
    (STAGE / piece.name).write_bytes(piece.read_bytes())
    have = sorted(p.name for p in STAGE.glob("p*-of-*"))
    log(f"staged {piece.name} ({piece.stat().st_size / 1e6:.1f} MB); stage holds {have}")


def unpack() -> Path:
    data = WORK / "data"
    data.mkdir(parents=True, exist_ok=True)
    pieces = sorted(STAGE.glob("p*-of-*"))
    total = int(pieces[0].name.split("-of-")[1]) if pieces else 0
    want = [f"p{i:02d}-of-{total:02d}" for i in range(total)]
    if not pieces or [p.name for p in pieces] != want:
        raise SystemExit(f"stage {STAGE} holds {[p.name for p in pieces]}, expected {want}")
    blob = b"".join(p.read_bytes() for p in pieces)
    sums = {}
    planes = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        for m in tf:
            b = tf.extractfile(m).read()
            if m.name == "sums.json":
                sums = json.loads(b)
            elif m.name.startswith("planes/"):
                planes[m.name[len("planes/"):]] = b
            elif m.name.startswith("weights/"):
                (REPO / m.name).parent.mkdir(exist_ok=True)
                (REPO / m.name).write_bytes(b)
            else:
                (data / Path(m.name).name.removesuffix(".z")).write_bytes(zlib.decompress(b))
    for name in HEAD_SHARDS:
        lo, hi = planes[f"{name}.lo"], zlib.decompress(planes[f"{name}.hi.z"])
        b = bytearray(2 * len(lo))
        b[0::2], b[1::2] = lo, hi
        (REPO / "weights" / name).write_bytes(bytes(b))
    expected = {f"weights/{n}" for n in WEIGHTS + HEAD_SHARDS} | {f"data/{n}" for n in DATA}
    if set(sums) != expected:
        raise SystemExit(f"the pack's file list {sorted(sums)} is not {sorted(expected)}")
    for rel, want in sums.items():
        p = REPO / rel if rel.startswith("weights/") else data / Path(rel).name
        got = sha256(p.read_bytes())
        if got != want:
            raise SystemExit(f"sha256 mismatch for {rel}: {got} != {want}")
    log(f"unpacked and checked {len(sums)} files")
    return data


def main(args) -> None:
    t0 = time.time()
    deadline = t0 + args.minutes * 60
    data = unpack() if not args.data else Path(args.data)
    env = dict(os.environ, PYTHONUNBUFFERED="1", DEEPSIM_CACHE=str(WORK / "cache"))
    os.environ["DEEPSIM_CACHE"] = env["DEEPSIM_CACHE"]
    sys.path.insert(0, str(REPO))
    from deepsim_cli.data import load_array
    imgs, _ = load_array([data / n for n in DATA], 144)  # decoded once; the runs read the cache
    log(f"data: {len(imgs)} images decoded ({time.time() - t0:.0f}s)")
    del imgs
    try:
        log(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.used,memory.total", "--format=csv"],
                           capture_output=True, text=True, timeout=20).stdout.strip())
    except Exception as e:  # noqa: BLE001 - informational only
        log(f"nvidia-smi: {e}")
    runs_dir = WORK / "runs"
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # --time-limit counts from each run's first step, after CUDA init, model building and loading
    # the decoded images: leave `startup` seconds for that
    train_seconds = int(deadline - time.time() - args.reserve - args.startup)
    if train_seconds < 30:
        raise SystemExit(f"only {train_seconds}s left for training after unpacking: raise --minutes")
    procs = {}
    for name in args.runs.split(","):
        cmd = [sys.executable, "-m", "deepsim_cli", "--device", DEVICE, "--precision", "auto", "train",
               "--out", str(runs_dir / name), "--time-limit", f"{train_seconds}s",
               *[a.format(data=data) for a in COMMON], *RUNS[name], *args.extra]
        f = open(logs / f"{name}.log", "w")
        f.write(" ".join(cmd) + "\n")
        f.flush()
        # SIGINT back to its default in the child (a runner without job control may start us with it
        # ignored, and then Python installs no KeyboardInterrupt handler): the interrupt below must
        # make train save and export
        procs[name] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        log(f"start {name}: {train_seconds}s")
    hard = deadline - args.reserve + args.grace
    while any(p.poll() is None for p in procs.values()) and time.time() < hard:
        time.sleep(5)
    late = [name for name, p in procs.items() if p.poll() is None]
    for name in late:  # Ctrl-C: train saves its state and exports the generator, then exits
        log(f"{name}: still running at the hard deadline; interrupted")
        procs[name].send_signal(signal.SIGINT)
    end = time.time() + 15  # one wait for all of them
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.0, end - time.time()) if name in late else None)
        except subprocess.TimeoutExpired:
            log(f"{name}: no exit 15 s after the interrupt; killed (its last checkpoint stands)")
            p.kill()
        log(f"{name}: rc {p.wait()}")
    log(f"training done at {time.time() - t0:.0f}s")
    fetch(runs_dir, logs, Path(args.fetch))
    log(f"job done at {time.time() - t0:.0f}s")


def fetch(runs_dir: Path, logs: Path, out: Path) -> None:
    """float16 generators + stats/config/grids/logs → tar → ≤ 16 MB pieces under WORK/fetch, the
    first PIECES_PER_CALL of them copied to `out` (logs, stats and grids first, then the runs in
    RUNS order: the fc generators come back in the first call)."""
    from device_pack import float16_copy, split  # tools/ is sys.path[0] when run as a script
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    runs = sorted(runs_dir.glob("*"), key=lambda r: list(RUNS).index(r.name) if r.name in RUNS else 99)
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for p in sorted(logs.glob("*.log")):
            tf.add(p, f"logs/{p.name}")
        for run in runs:
            for name in ("stats.jsonl", "config.json"):
                if (run / name).exists():
                    tf.add(run / name, f"runs/{run.name}/{name}")
            grids = sorted((run / "grids").glob("*.png"))
            for gp in sorted(set(grids[-2:] + grids[:1])):
                tf.add(gp, f"runs/{run.name}/grids/{gp.name}")
        for run in runs:
            g = run / "generator.safetensors"
            if g.exists():
                try:
                    f16 = run / "generator-fp16.safetensors"
                    float16_copy(g, f16)
                    tf.add(f16, f"runs/{run.name}/generator-fp16.safetensors")
                except Exception as e:  # noqa: BLE001 - pack what there is
                    log(f"{run.name}: could not pack the generator: {e}")
    blob = buf.getvalue()
    store = WORK / "fetch"
    store.mkdir(parents=True, exist_ok=True)
    for old in store.glob("gens.part*"):
        old.unlink()
    split(blob, store, "gens")
    n = len(list(store.glob("gens.part*")))
    log(f"fetch: {len(blob) / 1e6:.1f} MB in {n} pieces"
        + (f"; the rest comes back with `more --from K` in the next calls, K = {PIECES_PER_CALL}, "
           f"{2 * PIECES_PER_CALL}, …" if n > PIECES_PER_CALL else ""))
    more(out, 0)


def more(out: Path, start: int) -> None:
    """Copy pieces start .. start+PIECES_PER_CALL-1 of WORK/fetch to `out` (one call's worth)."""
    out.mkdir(parents=True, exist_ok=True)
    pieces = sorted((WORK / "fetch").glob("gens.part*"))
    for p in pieces[start:start + PIECES_PER_CALL]:
        (out / p.name).write_bytes(p.read_bytes())
    log(f"returning pieces {start}..{min(len(pieces), start + PIECES_PER_CALL) - 1} of {len(pieces)}")


def cli() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--out", default=str(REPO / ".carry" / "v2"))
    p.add_argument("--piece-mb", type=float, default=60)
    p.add_argument("--data-dir", default=str(REPO / ".carry"))
    s = sub.add_parser("stage")
    s.add_argument("piece")
    m = sub.add_parser("main")
    m.add_argument("--minutes", type=float, default=8.5)
    m.add_argument("--reserve", type=float, default=60,
                   help="seconds between the runs' expected end and --minutes (grace, interrupt, packing)")
    m.add_argument("--startup", type=float, default=45, help="seconds a run takes to reach its first step")
    m.add_argument("--grace", type=float, default=25,
                   help="seconds past the expected end before runs are interrupted (15 s more, then killed)")
    m.add_argument("--runs", default="fc6,fc7,fc8,pool5,vae,vae-se")
    m.add_argument("--fetch", required=True)
    m.add_argument("--data", default=None, help="use this data folder instead of unpacking the stage")
    m.add_argument("extra", nargs="*", help="more train options for every run (after --)")
    r = sub.add_parser("more")
    r.add_argument("--fetch", required=True)
    r.add_argument("--from", dest="start", type=int, default=PIECES_PER_CALL)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(Path(a.out), a.piece_mb, Path(a.data_dir))
    elif a.cmd == "stage":
        stage(Path(a.piece))
    elif a.cmd == "more":
        more(Path(a.fetch), a.start)
    else:
        main(a)


if __name__ == "__main__":
    cli()
