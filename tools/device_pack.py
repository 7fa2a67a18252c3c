"""Split a device job's results into ≤16 MB pieces that fit the device tool's fetch limits.

    python tools/device_pack.py WORK FETCH_DIR
Writes FETCH_DIR/head.partNN (the complete distilled AlexNet file), FETCH_DIR/gens.partNN (shipped
generators in float16 + logs, stats, grids, JSON results). Reassemble with `cat head.part* > head.tar`.
"""

import io
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PIECE = 16_000_000


def split(blob: bytes, out: Path, stem: str) -> None:
    """`blob` as out/STEM.part00, part01, … of ≤ PIECE bytes (join them in name order)."""
    for i in range(0, len(blob), PIECE):
        (out / f"{stem}.part{i // PIECE:02d}").write_bytes(blob[i:i + PIECE])


def float16_copy(src: Path, dst: Path) -> None:
    """The generator or VAE file `src` again at `dst` with float16 tensors, its header kept."""
    import torch

    from deepsim_cli.checkpoint import load_checkpoint, save_checkpoint
    ck = load_checkpoint(src)
    save_checkpoint(dst, ck.tensors, kind=ck.kind, config=ck.config, encoder=ck.encoder,
                    layer=ck.layer, encoder_sha256=ck.encoder_sha256, train_steps=ck.train_steps,
                    metrics=ck.metrics, extra=ck.extra, dtype=torch.float16)


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    head = work / "alexnet.safetensors"
    if head.exists():  # the exact file: generators record its sha256
        split(head.read_bytes(), out, "head")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for run in sorted((work / "runs").glob("*")):
            g = run / "generator.safetensors"
            if g.exists() and ("-full" in run.name or "imgx4" in run.name):
                f16 = run / "generator-fp16.safetensors"
                float16_copy(g, f16)
                tf.add(f16, f"runs/{run.name}/generator-fp16.safetensors")
            for name in ("stats.jsonl", "config.json"):
                if (run / name).exists():
                    tf.add(run / name, f"runs/{run.name}/{name}")
            grids = sorted((run / "grids").glob("*.png"))
            for gp in grids[-1:] + grids[:1]:
                tf.add(gp, f"runs/{run.name}/grids/{gp.name}")
        for p in list(work.glob("*.json")) + list((work / "logs").glob("*.log")):
            tf.add(p, str(p.relative_to(work)))
        if (work / "synth.npy").exists():
            import numpy as np
            s = np.load(work / "synth.npy")
            tf.add(work / "synth.npy", "synth.npy") if s.nbytes < 8e6 else None
            np.save(work / "synth-preview.npy", s[:: max(1, len(s) // 64)][:64])
            tf.add(work / "synth-preview.npy", "synth-preview.npy")
    split(buf.getvalue(), out, "gens")
    for p in sorted(out.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
