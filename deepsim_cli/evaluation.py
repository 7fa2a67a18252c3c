"""Evaluation of generators on held-out images: the paper's Table 2 errors and perceptual metrics.

`evaluate()` is what `deepsim eval` prints; benchmarks call it too. Each image is encoded once
and each reconstruction once (2N encoder passes per layer): the reconstruction is decoded from the
features already computed for the target, and the mean-image row encodes one image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .encoders import Encoder
from .errors import UsageError
from .inference import LoadedGenerator, decode
from .metrics import LPIPSAlex, encode_batched, mean_pairwise_distance, reconstruction_metrics


@dataclass
class LayerEval:
    """Metrics of one layer's generator on N images."""

    layer: str
    n: int
    rows: list[dict] = field(default_factory=list)            # one per method: means of each metric
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)  # the generator's, each (N,)


@torch.no_grad()
def evaluate_layer(x: torch.Tensor, encoder: Encoder, gen: LoadedGenerator, *, batch: int = 50,
                   lpips: LPIPSAlex | None = None, precision: str = "auto") -> LayerEval:
    """Reconstruct `x` through `gen` and measure it against the mean image.

    Args:
        x: (N, 3, S, S) float in [-1, 1] at the generator's output size, N ≥ 2.
        encoder: the encoder `gen` inverts.
        lpips: an LPIPSAlex to add LPIPS to the generator's row (None: skipped).
        precision: auto | bf16 | fp32 for the networks; the metrics are float32/float64.
    Returns:
        rows for "generator" and "mean image" (img_err, feat_err in % — paper Table 2 —,
        psnr, ssim, lpips), and the generator's per-image values.
    """
    if len(x) < 2:
        raise UsageError("evaluation needs at least two images (errors are normalised by their mean "
                         "pairwise distance)")
    layer = gen.layer
    f_x = encode_batched(encoder, x, layer, batch, precision=precision)
    s_img, s_feat = mean_pairwise_distance(x), mean_pairwise_distance(f_x)
    recon = torch.cat([decode(gen, f_x[i:i + batch], precision=precision).cpu()
                       for i in range(0, len(x), batch)])
    out = LayerEval(layer, len(x))
    m = reconstruction_metrics(recon, x, encoder, layer, img_scale=s_img, feat_scale=s_feat, target_feats=f_x,
                               lpips=lpips, batch=batch, precision=precision)
    out.per_image = m
    out.rows.append({"layer": layer, "method": "generator", "n": len(x),
                     **{k: float(v.mean()) for k, v in m.items()}})
    # the mean image is one image: encode it once, compare its features with every target's
    mean = x.mean(0, keepdim=True)
    f_mean = encode_batched(encoder, mean, layer, 1, precision=precision).expand_as(f_x)
    from .metrics import normalized_error, psnr, ssim
    xm = mean.expand_as(x)
    out.rows.append({"layer": layer, "method": "mean image", "n": len(x),
                     "img_err": float(normalized_error(xm, x, s_img).mean()),
                     "feat_err": float(normalized_error(f_mean, f_x, s_feat).mean()),
                     "psnr": float(psnr(xm, x).mean()), "ssim": float(ssim(xm, x).mean())})
    return out
