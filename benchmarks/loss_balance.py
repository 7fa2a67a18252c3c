"""Re-derive DeePSiM's loss weights for deepsim's normalised loss terms.

The paper's λ (feat 0.01, img 2e-6) multiply sums of squares over Caffe AlexNet pool5
features of 0–255 mean-subtracted inputs and over 0–255 pixels. Caffe's AlexNet is not available
here, so torchvision's AlexNet fed the same 0–255 inputs (no std division: ReLU networks are
positively homogeneous, so this reproduces Caffe's input scaling up to the biases) stands in for it.
For blurred real images as the "reconstruction" (a typical early-training state), we measure the
gradient norm of each paper term w.r.t. the generator output, the same for deepsim's normalised
terms, and report the λ_img / λ_feat that gives the paper's ratio of image to feature gradient.

    python benchmarks/loss_balance.py [--n 32] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepsim_cli.data import load_array, to_float  # noqa: E402
from deepsim_cli.encoders import build_encoder  # noqa: E402
from deepsim_cli.losses import feat_loss, img_loss  # noqa: E402


def grad_norm(loss_fn, fake: torch.Tensor) -> float:
    f = fake.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(f), f)
    return float(g.norm())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenette-160-val.tar"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--comparator-size", type=int, default=224)
    a = ap.parse_args()
    enc = build_encoder("alexnet")
    enc = enc.with_input_size(a.comparator_size)
    arr, _ = load_array(a.data, a.size, limit=a.n)
    x = to_float(torch.from_numpy(arr))
    mean_bgr = torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)

    def caffe_pool5(img):  # [-1,1] RGB → Caffe-style 0–255 BGR, mean-subtracted, 227-ish px
        z = F.interpolate(img, size=(a.comparator_size,) * 2, mode="bilinear", align_corners=False)
        z = (z + 1) * 127.5
        z = z.flip(1) - mean_bgr
        return enc.model.features(z.flip(1))  # torchvision weights expect RGB order

    rows, advs, rows_b, advs_b = [], [], [], []
    for sigma in (1.0, 2.0, 4.0):
        k = int(4 * sigma) | 1
        t = torch.arange(k) - k // 2
        g1 = torch.exp(-t.float() ** 2 / (2 * sigma ** 2))
        g1 = (g1 / g1.sum())
        w = (g1[:, None] * g1[None, :]).expand(3, 1, k, k)
        fake = F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), w, groups=3)
        with torch.no_grad():
            c_real_caffe = caffe_pool5(x)
            c_real = enc(x, ["pool5"])["pool5"]
        # paper terms (sums, per image)
        p_feat = grad_norm(lambda f: 0.01 * (caffe_pool5(f) - c_real_caffe).pow(2).sum() / len(x), fake)
        p_img = grad_norm(lambda f: 2e-6 * ((f - x) * 127.5).pow(2).sum() / len(x), fake)
        # deepsim's normalised terms, unit weights
        d_feat = grad_norm(lambda f: feat_loss(enc(f, ["pool5"])["pool5"], c_real), fake)
        d_img = grad_norm(lambda f: img_loss(f, x), fake)
        # (B) the opposite assumption: Caffe's pool5 has torchvision's (normalised-input) magnitude
        p_feat_b = grad_norm(lambda f: 0.01 * (enc(f, ["pool5"])["pool5"] - c_real).pow(2).sum() / len(x), fake)
        ratio_paper = p_img / p_feat
        lam = ratio_paper * d_feat / d_img
        lam_b = (p_img / p_feat_b) * d_feat / d_img
        rows.append(lam)
        rows_b.append(lam_b)
        # the adversarial gradient depends on D, so λ_adv is matched on loss *values* instead:
        # paper 100·(−log D) against its feature term, ours λ_adv·(−log D) against our feature term
        with torch.no_grad():
            v_paper = float(0.01 * (caffe_pool5(fake) - c_real_caffe).pow(2).sum() / len(x))
            v_ours = float(feat_loss(enc(fake, ["pool5"])["pool5"], c_real))
            v_paper_b = float(0.01 * (enc(fake, ["pool5"])["pool5"] - c_real).pow(2).sum() / len(x))
        adv = 100.0 * v_ours / v_paper
        advs.append(adv)
        advs_b.append(100.0 * v_ours / v_paper_b)
        print(f"blur σ={sigma}: paper |∇img|/|∇feat| = {ratio_paper:.5f}; deepsim unit-weight "
              f"|∇img|/|∇feat| = {d_img / d_feat:.4f} → λ_img/λ_feat = {lam:.4f}; paper feat value "
              f"{v_paper:.0f} vs ours {v_ours:.3f} → λ_adv/λ_feat = {adv:.4f}")
    gm = lambda v: float(np.exp(np.mean(np.log(v))))  # noqa: E731
    print(f"(A) 0-255 inputs through torchvision AlexNet: λ_img/λ_feat = {gm(rows):.4f}, "
          f"λ_adv/λ_feat = {gm(advs):.4f}")
    print(f"(B) Caffe pool5 at torchvision's scale:      λ_img/λ_feat = {gm(rows_b):.4f}, "
          f"λ_adv/λ_feat = {gm(advs_b):.4f}")
    print(f"geometric middle of (A) and (B):             λ_img/λ_feat = {gm(rows + rows_b):.4f}, "
          f"λ_adv/λ_feat = {gm(advs + advs_b):.4f}")


if __name__ == "__main__":
    main()
