"""Distil AlexNet's classifier head (fc6, fc7, fc8 — torchvision's exact shapes) from the
MobileNetV2 teacher, on top of the frozen genuine AlexNet conv layers.

The original fc weights are not available offline (only torchvision's conv layers were converted:
weights/README.md), so the head is trained here to
match the teacher's softened class distribution on augmented views of the shared training
images, optionally plus DeepInversion images (Yin et al. 2020) the teacher synthesizes for
classes the real data lacks. `deepsim distill` is the CLI; tools/device_job.py the GPU recipe.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from .checkpoint import load_checkpoint, load_run_state_tensors, run_state_tensors, save_checkpoint
from .data import color_jitter, load_array, random_resized_crop, step_generator, to_float
from .encoders import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from .weights_store import resolve as resolve_weights
from .precision import autocast
from .utils import cosine_lr, rng_seed, set_lr


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one head distillation (`distill`): optimiser, schedule, KL temperature, augmentation."""
    steps: int = 6000
    batch: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 300
    temperature: float = 2.0
    cutmix: float = 0.5           # probability a batch is CutMix-ed (else MixUp with prob mixup)
    mixup: float = 0.3
    crop_scale: tuple[float, float] = (0.2, 1.0)
    teacher_size: int = 224       # the teacher's view of each crop (160 is ~2.5x cheaper on a CPU)
    seed: int = 0
    precision: str = "auto"       # auto | bf16 | fp32 (deepsim_cli.precision): the teacher and the
                                  # student's conv layers under autocast; the head's loss in float32
    log_every: int = 50
    ckpt_every: int = 1000
    time_limit: float | None = None


def _norm(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x + 1) * 0.5 - mean) / std


def _cutmix(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Paste a random box of a shuffled batch into each image (CutMix)."""
    b, _, h, w = x.shape
    lam = float(torch.rand(1, generator=g))
    perm = torch.randperm(b, generator=g).to(x.device)
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    return x


def teacher_student(device: torch.device, *, fold_bn: bool = True):
    """(teacher MobileNetV2 in eval, AlexNet with frozen genuine convs and a fresh head).

    The teacher's BatchNorm layers are folded into its convs (same outputs, faster) unless
    `fold_bn` is False: DeepInversion matches their running statistics."""
    if fold_bn:
        teacher = build_encoder("mobilenet_v2", device=device).model.eval()
    else:
        teacher = torchvision.models.mobilenet_v2(weights=None)
        teacher.load_state_dict(load_checkpoint(resolve_weights("mobilenet_v2.safetensors")).tensors)
        teacher = teacher.eval().to(device)
    from .nets import alexnet

    student = alexnet()
    conv = load_checkpoint(resolve_weights("alexnet-conv.safetensors")).tensors
    student.features.load_state_dict({k[len("features."):]: v.float() for k, v in conv.items()
                                      if k.startswith("features.")})
    student.features.requires_grad_(False)
    student.features.to(memory_format=torch.channels_last)
    return teacher, student.to(device)


def deep_inversion(teacher: nn.Module, classes: Sequence[int], *, size: int = 128, iters: int = 500,
                   batch: int = 256, lr: float = 0.1, r_bn: float = 0.05, r_tv: float = 2.0,
                   r_l2: float = 1e-5, seed: int = 0, device: torch.device, precision: str = "auto",
                   log: Callable[[str], None] = print) -> np.ndarray:
    """Synthesize one image per entry of `classes` by DeepInversion (Yin et al., CVPR 2020).

    Inputs are optimised so the teacher predicts the class and every BatchNorm layer's batch
    statistics match its running statistics (the statistics and losses in float32 whatever the
    `precision` of the forward pass). Returns (N, size, size, 3) uint8.
    """
    bns = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise ValueError("DeepInversion needs the teacher's BatchNorm layers: build it with "
                         "teacher_student(device, fold_bn=False)")
    losses: list[torch.Tensor] = []

    def hook(mod, inp, _out):
        x = inp[0].float()
        mu = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        losses.append(torch.norm(mu - mod.running_mean, 2) + torch.norm(var - mod.running_var, 2))

    handles = [m.register_forward_hook(hook) for m in bns]
    teacher.requires_grad_(False)
    out = np.empty((len(classes), size, size, 3), dtype=np.uint8)
    g = torch.Generator(device="cpu").manual_seed(rng_seed(seed))
    try:
        for start in range(0, len(classes), batch):
            cls = torch.tensor(list(classes[start:start + batch]), device=device)
            b = len(cls)
            x = (torch.randn(b, 3, size, size, generator=g) * 0.2).to(device).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
            t0 = time.time()
            for it in range(iters):
                set_lr(opt, cosine_lr(lr, it, iters))
                dx, dy = (int(v) for v in torch.randint(-size // 16, size // 16 + 1, (2,), generator=g))
                xi = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
                if it % 2:
                    xi = xi.flip(3)
                losses.clear()
                with autocast(device, precision):
                    logits = teacher(_norm(xi.clamp(-1, 1) if it > iters // 2 else xi))
                ce = F.cross_entropy(logits.float(), cls)
                bn = torch.stack([v.float() for v in losses]).sum()
                tv = ((xi[:, :, 1:] - xi[:, :, :-1]).pow(2).mean() + (xi[..., 1:] - xi[..., :-1]).pow(2).mean())
                loss = ce + r_bn * bn + r_tv * tv + r_l2 * x.pow(2).sum() / b
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = (teacher(_norm(x.clamp(-1, 1))).argmax(1) == cls).float().mean().item()
            log(f"deepinversion {start + b}/{len(classes)}: ce {ce.item():.3f} bn {bn.item():.2f} "
                f"teacher acc {acc:.3f} ({time.time() - t0:.1f}s)")
            u8 = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            out[start:start + b] = u8
    finally:
        for h in handles:
            h.remove()
    return out


def _teacher_and_features(cfg: DistillConfig, arrays: Sequence[torch.Tensor], sizes: torch.Tensor,
                          teacher: nn.Module, student: nn.Module, g: torch.Generator, n: int,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """n augmented views sampled from `arrays` (∝ size): random resized crops to 224, flips,
    colour jitter, then CutMix or MixUp; returns (student pool5 features, teacher logits)."""
    pick = torch.multinomial(sizes / sizes.sum(), n, replacement=True, generator=g)
    counts = torch.bincount(pick, minlength=len(arrays))
    views = []
    for a, k in zip(arrays, counts.tolist()):
        if k == 0:
            continue
        idx = torch.randint(len(a), (k,), generator=g).to(a.device)
        views.append(random_resized_crop(to_float(a[idx]), 224, g, scale=cfg.crop_scale))
    x = color_jitter(torch.cat(views), g, 0.3)
    # the teacher labels the mixed image itself, so targets need no mixing
    r = float(torch.rand(1, generator=g))
    if r < cfg.cutmix:
        x = _cutmix(x, g)
    elif r < cfg.cutmix + cfg.mixup:
        lam = float(torch.empty(1).uniform_(0.3, 0.7, generator=g))
        perm = torch.randperm(x.shape[0], generator=g).to(device)
        x = lam * x + (1 - lam) * x[perm]
    xn = _norm(x)
    with torch.no_grad(), autocast(device, cfg.precision):
        xt = xn if cfg.teacher_size == xn.shape[-1] else F.interpolate(
            xn, size=cfg.teacher_size, mode="bilinear", antialias=True, align_corners=False)
        t_logits = teacher(xt.contiguous(memory_format=torch.channels_last)).float()
        feats = torch.flatten(student.avgpool(student.features(
            xn.contiguous(memory_format=torch.channels_last))), 1).float()
    return feats, t_logits


def extract_views(cfg: DistillConfig, arrays: Sequence[np.ndarray], cache_dir: str | Path, rounds: int, *,
                  device: torch.device, chunk: int = 64, log: Callable[[str], None] = print,
                  on_views: Callable[[int], None] | None = None) -> int:
    """CPU path: precompute (pool5 features, teacher logits) of augmented views once, so the head
    can train for many epochs without running the two networks again.

    Each round draws as many views as there are images and is written as one shard pair
    (round-NNN.feats.npy float16 (V, 9216), round-NNN.logits.npy float16 (V, 1000)) atomically;
    rounds already on disk are skipped, so an interrupted extraction resumes. Returns the number
    of cached views. `on_views(k)` is called as views are done (k at a time; a skipped round
    counts as done), for a progress bar over rounds × images.
    """
    from .utils import atomic_output

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    teacher, student = teacher_student(device)
    teacher = teacher.to(memory_format=torch.channels_last)
    tarrays = [torch.as_tensor(a).to(device) for a in arrays]
    sizes = torch.tensor([len(a) for a in tarrays], dtype=torch.float)
    n = int(sizes.sum())
    for r in range(rounds):
        stem = cache_dir / f"round-{r:03d}"
        if Path(f"{stem}.logits.npy").exists():
            if on_views:
                on_views(n)
            continue
        t0 = time.time()
        feats = np.empty((n, 9216), dtype=np.float16)
        logits = np.empty((n, 1000), dtype=np.float16)
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            g = step_generator(cfg.seed, r * 1_000_003 + i, salt=29)
            f, t = _teacher_and_features(cfg, tarrays, sizes, teacher, student, g, k, device)
            feats[i:i + k] = f.cpu().numpy()
            logits[i:i + k] = t.cpu().numpy()
            if on_views:
                on_views(k)
        for arr, suffix in ((feats, "feats"), (logits, "logits")):  # logits last: they mark a complete round
            with atomic_output(f"{stem}.{suffix}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
        log(f"cached round {r + 1}/{rounds}: {n} views in {time.time() - t0:.0f}s")
    return len(load_view_cache(cache_dir)[0])


def load_view_cache(cache_dir: str | Path | Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """All complete rounds of one view cache, or of several (concatenated in the order given),
    as (features (V, 9216), logits (V, 1000)) float16 arrays."""
    from .errors import UsageError

    dirs = [cache_dir] if isinstance(cache_dir, (str, Path)) else list(cache_dir)
    rounds = []
    for d in dirs:
        found = sorted(Path(d).glob("round-*.logits.npy"))
        if not found:
            raise UsageError(f"no cached views in {d}")
        rounds += found
    feats = [np.load(str(p).replace(".logits.npy", ".feats.npy"), mmap_mode="r") for p in rounds]
    logits = [np.load(p, mmap_mode="r") for p in rounds]
    return np.concatenate(feats), np.concatenate(logits)


def training_images(data: Sequence[str | Path], load_size: int, *, synthetic: int = 0, di_iters: int = 300,
                    seed: int = 0, device: torch.device | str = "cpu", precision: str = "auto",
                    log: Callable[[str], None] = print) -> tuple[list[np.ndarray], int]:
    """The images distillation trains on: each of `data` decoded at `load_size` ((N, S, S, 3)
    uint8 arrays), plus, with `synthetic` > 0, that many DeepInversion images (112 px, `di_iters`
    steps) for each ImageNet class the data's file names lack. Returns (arrays, synthetic count)."""
    arrays, names = [], []
    for d in data:
        a, n = load_array(str(d), load_size)
        arrays.append(a)
        names += n
    log(f"{sum(len(a) for a in arrays)} training images")
    if not synthetic:
        return arrays, 0
    have = classes_in(names)
    missing = [c for c in range(1000) if c not in have]
    log(f"DeepInversion: {synthetic} image(s) for each of {len(missing)} classes the data lacks")
    teacher, _ = teacher_student(torch.device(device), fold_bn=False)
    synth = deep_inversion(teacher, missing * synthetic, size=112, iters=di_iters, seed=seed,
                           device=device, precision=precision, log=log)
    return arrays + [synth], len(synth)


def init_head(student: nn.Module, path: str | Path) -> None:
    """Start the student's head (classifier.*) from an AlexNet file's fc6–fc8 (a .safetensors or a
    sharded .safetensors.index.json such as weights/alexnet-head-v2.safetensors.index.json)."""
    from .encoders import load_sharded
    from .errors import UsageError

    path = Path(path)
    tensors = load_sharded(path) if path.name.endswith(".safetensors.index.json") else load_checkpoint(path).tensors
    head = {k[len("classifier."):]: v.float() for k, v in tensors.items() if k.startswith("classifier.")}
    want = student.classifier.state_dict()
    if set(head) != set(want) or any(head[k].shape != want[k].shape for k in want):
        raise UsageError(f"--init {path}: not an AlexNet with torchvision's fc6-fc8 head")
    student.classifier.load_state_dict(head)


def distill(cfg: DistillConfig, arrays: Sequence[np.ndarray | torch.Tensor] | None = None, *,
            out: str | Path, device: torch.device, log: Callable[[str], None] = print,
            state_path: str | Path | None = None,
            cache_dir: str | Path | Sequence[str | Path] | None = None,
            init: str | Path | None = None) -> dict:
    """Train the AlexNet head on `arrays` (uint8 (N, S, S, 3) each; sampled ∝ size), or on the
    views cached by extract_views() in `cache_dir` (one folder or several, sampled uniformly
    over all their views).

    The head starts from `init`'s fc6–fc8 if given (else random); a run resumes from
    `state_path` if it exists (the resumed state wins over `init`). Writes the complete AlexNet
    (genuine convs + distilled head) to `out`. Returns the final stats.
    """
    torch.manual_seed(rng_seed(cfg.seed))
    teacher, student = teacher_student(device)
    if init is not None:
        init_head(student, init)
        log(f"head initialised from {init}")
    teacher = teacher.to(memory_format=torch.channels_last)
    params = list(student.classifier.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    state_path = Path(state_path) if state_path else Path(str(out) + ".state.safetensors")
    if state_path.exists():
        ck = load_checkpoint(state_path, kind="distill-state", map_location=device)
        load_run_state_tensors({"cls": student.classifier, "opt": opt}, ck.tensors)
        step = ck.train_steps
        log(f"resumed distillation at step {step}")
    if cache_dir is not None:
        cache = load_view_cache(cache_dir)
        where = cache_dir if isinstance(cache_dir, (str, Path)) else ", ".join(map(str, cache_dir))
        log(f"training on {len(cache[0])} cached views from {where}")
        sizes = None
    else:
        cache = None
        arrays = [torch.as_tensor(a).to(device) for a in arrays]
        sizes = torch.tensor([len(a) for a in arrays], dtype=torch.float)
    t_start = time.time()
    hist: list[float] = []

    def save_state():
        save_checkpoint(state_path, run_state_tensors({"cls": student.classifier, "opt": opt}), kind="distill-state",
                        config=asdict(cfg), train_steps=step)

    student.classifier.train()
    while step < cfg.steps:
        g = step_generator(cfg.seed, step, salt=17)
        # cosine over whichever budget runs out first: steps or wall time
        prog = step / cfg.steps
        if cfg.time_limit:
            prog = max(prog, (time.time() - t_start) / cfg.time_limit)
        lr = cosine_lr(cfg.lr * min(1.0, (step + 1) / cfg.warmup), prog)
        set_lr(opt, lr)
        if cache is not None:
            idx = torch.randint(len(cache[0]), (cfg.batch,), generator=g).sort().values.numpy()
            feats = torch.from_numpy(np.asarray(cache[0][idx], dtype=np.float32)).to(device)
            t_logits = torch.from_numpy(np.asarray(cache[1][idx], dtype=np.float32)).to(device)
        else:
            feats, t_logits = _teacher_and_features(cfg, arrays, sizes, teacher, student, g, cfg.batch, device)
        with autocast(device, cfg.precision):
            s_logits = student.classifier(feats).float()
        T = cfg.temperature
        loss = F.kl_div(F.log_softmax(s_logits / T, 1), F.log_softmax(t_logits / T, 1),
                        reduction="batchmean", log_target=True) * T * T
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist.append(float(loss.detach()))
        if step % cfg.log_every == 0:
            with torch.no_grad():
                agree = (s_logits.argmax(1) == t_logits.argmax(1)).float().mean().item()
            log(json.dumps({"step": step, "loss": sum(hist[-cfg.log_every:]) / cfg.log_every,
                            "agree": round(agree, 4), "lr": lr, "time": round(time.time() - t_start, 1)}))
        out_of_time = cfg.time_limit is not None and time.time() - t_start > cfg.time_limit
        if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
            save_state()
        if out_of_time:
            log(f"time limit reached at step {step}")
            break
    conv = load_checkpoint(resolve_weights("alexnet-conv.safetensors"))
    # genuine conv weights stay float32 (bit-exact torchvision); the distilled head ships in float16
    sd = {k: v.detach().cpu() if k.startswith("features.") else v.detach().cpu().half()
          for k, v in student.state_dict().items()}
    save_checkpoint(out, sd, kind="encoder", config={"arch": "alexnet", "distill": asdict(cfg)},
                    encoder="alexnet", train_steps=step,
                    extra={"teacher": "mobilenet_v2 IMAGENET1K_V1",
                           "conv_source": conv.extra.get("source_package", "alexnet-conv.safetensors"),
                           **({"init": Path(init).name} if init is not None else {})})
    return {"steps": step, "final_loss": sum(hist[-100:]) / max(1, len(hist[-100:]))}


@torch.no_grad()
def evaluate_classifier(model_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                        batch: int = 100) -> torch.Tensor:
    """Logits for (N, 3, 224, 224) [-1, 1] images, batched."""
    outs = [model_fn(images[i:i + batch]) for i in range(0, len(images), batch)]
    return torch.cat(outs)


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet wnids in class-index order (resources/imagenet_wnids.txt)."""
    path = Path(__file__).resolve().parent / "resources" / "imagenet_wnids.txt"
    return path.read_text().split()


def classes_in(names: Sequence[str]) -> set[int]:
    """ImageNet class indices named by wnid folders / prefixes in image paths."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    out = set()
    for n in names:
        for part in Path(n).parts[:-1] + (Path(n).name.split("_")[0],):
            if part in index:
                out.add(index[part])
    return out


@torch.no_grad()
def evaluate_against_teacher(student_weights: str | Path | None, labelled: str | Path,
                             unlabelled: Sequence[tuple[str, str | Path, int]] = (),
                             device: torch.device | str = "cpu", batch: int = 100) -> dict:
    """Top-1/top-5 of teacher and student on a labelled set whose file names start with the
    wnid (imagenet-sample-256: resize 256, centre crop 224), and top-1 agreement everywhere.

    Args:
        student_weights: the AlexNet file to evaluate (None: the shipped one; "" for the
            teacher alone).
        labelled: folder or tar of <wnid>_<name>.jpg files.
        unlabelled: (name, folder or tar, decode size) sets where only agreement is measured.
    """
    from .data import to_float

    student = None
    if student_weights != "":
        student = build_encoder("alexnet", student_weights or None, device)
        student.check_layers(["fc8"])
    teacher = build_encoder("mobilenet_v2", None, device)
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    imgs, names = load_array(labelled, 256)
    labels = torch.tensor([index[Path(n).name.split("_")[0]] for n in names])
    sets = {Path(str(labelled)).name: (imgs, labels, 16)}
    for name, src, size in unlabelled:
        a, _ = load_array(src, size)
        sets[name] = (a, None, 0)
    out = {}
    for name, (a, y, crop) in sets.items():
        ts, ss = [], []
        for i in range(0, len(a), batch):
            x = to_float(torch.from_numpy(a[i:i + batch]))
            if crop:
                x = x[:, :, crop:-crop, crop:-crop]
            x = x.to(device)
            ts.append(teacher(x, ["logits"])["logits"].float().cpu())
            if student is not None:
                ss.append(student(x, ["fc8"])["fc8"].float().cpu())
        t = torch.cat(ts)
        s = torch.cat(ss) if ss else None
        r = {"n": len(a)}
        if s is not None:
            r["top1_agreement"] = float((t.argmax(1) == s.argmax(1)).float().mean())
        if y is not None:
            for tag, lg in (("teacher", t), ("student", s)):
                if lg is None:
                    continue
                top5 = lg.topk(5, 1).indices
                r[f"{tag}_top1"] = float((top5[:, 0] == y).float().mean())
                r[f"{tag}_top5"] = float((top5 == y[:, None]).any(1).float().mean())
        out[name] = r
    return out
