"""Evaluation of generators on held-out images: the paper's Table 2 errors, perceptual metrics,
and two numbers that catch a collapsed generator, judged by an independent network (MobileNetV2):

- recognition: the share of images whose judge top-1 class (of the original) is among the judge's
  top-5 for the reconstruction;
- spread: the mean pairwise distance of the reconstructions over that of the originals, in the
  judge's pooled features (a generator that returns one template for every photo scores ~0).

And one that catches a periodic artifact (checkerboard, stripes) every reconstruction shares:
`periodic`, the sharpest peak of their mean power spectrum over its neighbourhood
(metrics.periodic_peak; photos score ~2), with its frequency `periodic_at`.

`evaluate_layer()` is what `deepsim eval` prints; benchmarks call it too. Each image is encoded
once and each reconstruction once (2N encoder passes per layer): the reconstruction is decoded from
the features already computed for the target, and the mean-image row encodes one image. Reference
rows: the mean image, and the original downsampled to 32 px and back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .encoders import Encoder
from .errors import UsageError
from .inference import LoadedGenerator, decode
from .encoders import encode_batched
from .metrics import (LPIPSAlex, mean_pairwise_distance, normalized_error, periodic_peak, psnr,
                      reconstruction_metrics, ssim)


@dataclass
class LayerEval:
    """Metrics of one layer's generator on N images."""

    layer: str
    n: int
    rows: list[dict] = field(default_factory=list)            # one per method: means of each metric
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)  # the generator's, each (N,)


def evaluate_layer(x: torch.Tensor, encoder: Encoder, gen: LoadedGenerator, *, batch: int = 50,
                   lpips: LPIPSAlex | None = None, judge: Encoder | None = None,
                   precision: str = "auto", refine_steps: Sequence[int] = (),
                   refine_kw: dict | None = None,
                   on_stage: Callable[[str], None] | None = None) -> LayerEval:
    """Reconstruct `x` through `gen` and measure it against the mean image.

    Args:
        x: (N, 3, S, S) float in [-1, 1] at the generator's output size, N ≥ 2.
        encoder: the encoder `gen` inverts.
        lpips: an LPIPSAlex to add LPIPS to the generator's rows (None: skipped).
        judge: an independent classifier (MobileNetV2) for `recognition` and `spread` on every
            row (None: skipped, and no 32 px row).
        precision: auto | bf16 | fp32 for the networks; the metrics are float32/float64.
        refine_steps: for each N > 0, a row "generator + refine N" (deepsim_cli.refine) on the
            same images; `refine_kw` are further refine() options. Its seconds per image are in
            the row as `sec_per_image`.
        on_stage: called after each stage (see `eval_stages`) with its name: progress.
    Returns:
        rows for "generator", each "generator + refine N", "mean image" and (with a judge)
        "32 px": img_err, feat_err in % (paper Table 2), psnr, ssim, lpips, recognition,
        spread, periodic (not on the mean image; the generator's row also has `periodic_photos`,
        the originals' value); and the generator's per-image values.
    """
    if len(x) < 2:
        raise UsageError("evaluation needs at least two images (errors are normalised by their mean "
                         "pairwise distance)")
    layer = gen.layer
    stage = on_stage or (lambda _name: None)
    f_x = encode_batched(encoder, x, layer, batch, precision=precision)
    stage("encode")
    s_img, s_feat = mean_pairwise_distance(x), mean_pairwise_distance(f_x)
    out = LayerEval(layer, len(x))
    refs: dict[str, torch.Tensor] = {}

    def add(method: str, recon: torch.Tensor, **extra) -> dict[str, torch.Tensor]:
        m = reconstruction_metrics(recon, x, encoder, layer, img_scale=s_img, feat_scale=s_feat,
                                   target_feats=f_x, lpips=lpips, batch=batch, precision=precision)
        peak, at = periodic_peak(recon)
        out.rows.append({"layer": layer, "method": method, "n": len(x),
                         **{k: float(v.mean()) for k, v in m.items()}, "periodic": peak,
                         "periodic_at": list(at), **extra})
        refs[method] = recon
        return m

    t0 = time.perf_counter()
    recon = torch.cat([decode(gen, f_x[i:i + batch], precision=precision).cpu()
                       for i in range(0, len(x), batch)])
    out.per_image = add("generator", recon, sec_per_image=(time.perf_counter() - t0) / len(x),
                        periodic_photos=periodic_peak(x)[0])
    stage("generator")
    for steps in refine_steps:
        if steps <= 0:
            continue
        from .refine import refine
        t0 = time.perf_counter()
        r = refine(x, encoder, gen, steps, batch=batch, precision=precision, **(refine_kw or {}))
        add(f"generator + refine {steps}", r.images, sec_per_image=(time.perf_counter() - t0) / len(x))
        stage(f"refine {steps}")
    # the mean image is one image: encode it once, compare its features with every target's
    mean = x.mean(0, keepdim=True)
    f_mean = encode_batched(encoder, mean, layer, 1, precision=precision).expand_as(f_x)
    xm = mean.expand_as(x)
    refs["mean image"] = xm
    out.rows.append({"layer": layer, "method": "mean image", "n": len(x),
                     "img_err": float(normalized_error(xm, x, s_img).mean()),
                     "feat_err": float(normalized_error(f_mean, f_x, s_feat).mean()),
                     "psnr": float(psnr(xm, x).mean()), "ssim": float(ssim(xm, x).mean())})
    if judge is not None:
        jx = judge_features(judge, x, batch=batch, precision=precision)
        x32 = refs["32 px"] = downsample_32(x)
        out.rows.append({"layer": layer, "method": "32 px", "n": len(x),
                         "periodic": periodic_peak(x32)[0],
                         "img_err": float(normalized_error(x32, x, s_img).mean()),
                         "psnr": float(psnr(x32, x).mean()), "ssim": float(ssim(x32, x).mean())})
        for row in out.rows:
            jr = judge_features(judge, refs[row["method"]], batch=batch, precision=precision)
            row.update(recognition=recognition(jr, jx), spread=spread(jr, jx))
        stage("judge")
    return out


def write_per_image_csv(path, per_image: dict[str, dict[str, torch.Tensor]], names: Sequence[str]) -> None:
    """CSV with one row per image and layer: image,layer,<metric>… from {layer: LayerEval.per_image};
    written atomically (all of it or nothing)."""
    from .utils import atomic_output

    keys = list(next(iter(per_image.values())))
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        f.write("image,layer," + ",".join(keys) + "\n")
        for layer, m in per_image.items():
            for i, name in enumerate(names):
                f.write(f"{name},{layer}," + ",".join(f"{float(m[k][i]):.6g}" for k in keys) + "\n")


def eval_stages(refine_steps: Sequence[int] = (), judge: bool = True) -> int:
    """How many times evaluate_layer calls `on_stage` (for a progress total)."""
    return 2 + sum(1 for s in refine_steps if s > 0) + int(judge)


def downsample_32(x: torch.Tensor) -> torch.Tensor:
    """The reference that keeps only a thumbnail: (N, 3, S, S) → 32 px → S px (bilinear, antialiased)."""
    import torch.nn.functional as F
    small = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(-1, 1)


@dataclass
class JudgeFeatures:
    """What the judge network (MobileNetV2) says of N images: recognition uses the logits, spread the pooled features."""
    logits: torch.Tensor   # (N, 1000)
    pooled: torch.Tensor   # (N, D) globally averaged last conv features


@torch.no_grad()
def judge_features(judge: Encoder, x: torch.Tensor, *, batch: int = 50, precision: str = "auto") -> JudgeFeatures:
    """Class logits and pooled features of the judge network (MobileNetV2: `logits`, `conv18`)."""
    from .precision import autocast, model_device
    dev = model_device(judge)
    pool_layer = "conv18" if "conv18" in judge.taps else list(judge.taps)[-2]
    last = "logits" if "logits" in judge.taps else list(judge.taps)[-1]
    logits, pooled = [], []
    for i in range(0, len(x), batch):
        with autocast(dev, precision):
            f = judge(x[i:i + batch].to(dev), [pool_layer, last], trained_only=False)
        logits.append(f[last].float().cpu())
        p = f[pool_layer].float()
        pooled.append((p.mean((2, 3)) if p.dim() == 4 else p).cpu())
    return JudgeFeatures(torch.cat(logits), torch.cat(pooled))


def recognition(recon: JudgeFeatures, orig: JudgeFeatures, k: int = 5) -> float:
    """Share (0–1) of images whose original's top-1 class is in the reconstruction's top-k."""
    top1 = orig.logits.argmax(1)
    topk = recon.logits.topk(k, dim=1).indices
    return float((topk == top1[:, None]).any(1).float().mean())


def spread(recon: JudgeFeatures, orig: JudgeFeatures) -> float:
    """Mean pairwise distance of the reconstructions' pooled features / that of the originals'."""
    return mean_pairwise_distance(recon.pooled) / max(mean_pairwise_distance(orig.pooled), 1e-12)
