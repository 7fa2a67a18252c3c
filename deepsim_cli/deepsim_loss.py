"""The DeePSiM objective as training phases (stylegan2-ada's `StyleGAN2Loss.accumulate_gradients`).

`DeePSiMLoss.step` runs one optimisation step of a run: the bridge phase of an fc generator started
from a conv-layer one, else a D update (unless paused) and a G update under
λ_feat·L_feat + λ_adv·L_adv + λ_img·L_img (+ λ_KL·KL for the VAE), with the D/G pause hysteresis of
the original code and adaptive clipping of G's gradient. It owns no files: `training.Trainer`
builds the networks and optimizers, saves and restores them (with `pause_state`), and schedules
the steps.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .config import TrainConfig
from .discriminator import random_shift
from .errors import DeepsimError
from .losses import LossWeights, discr_loss, generator_loss, kl_loss
from .precision import autocast
from .utils import rng_seed


class NonFiniteLoss(DeepsimError):
    """A loss became NaN or inf: the run stops, keeping its last checkpoint."""


class DeePSiMLoss:
    """The phases of one DeePSiM run over networks built elsewhere.

    Args:
        cfg: the run's configuration (loss weights, warm-up, pauses, d_shift, VAE options).
        G, D, optG, optD: generator (or VAE), discriminator and their Adam optimizers.
        encoder: the frozen network whose `feat_layer` features G reads.
        comparator, comp_layer: the L_feat network and layer (comparator None without L_feat).
        bridge_layer: the conv layer an fc G's bridge is fitted to first (None: no bridge phase).
        weights: the loss weights after the warm-up (LossWeights.select(cfg.loss)).
    Images are (B, 3, S, S) in [-1, 1]; features as the encoder returns them.
    """

    def __init__(self, cfg: TrainConfig, *, G, D, optG, optD, encoder, comparator, comp_layer: str,
                 feat_layer: str, bridge_layer: str | None, weights: LossWeights, vae_frozen: bool,
                 device: torch.device, precision: str, world: int = 1):
        self.cfg, self.G, self.D, self.optG, self.optD = cfg, G, D, optG, optD
        self.encoder, self.comparator, self.comp_layer = encoder, comparator, comp_layer
        self.feat_layer, self.bridge_layer, self.weights = feat_layer, bridge_layer, weights
        self.vae_frozen, self.device, self.precision, self.world = vae_frozen, device, precision, world
        self.d_paused = False
        self.g_clip = cfg.g_clip if cfg.g_clip is not None else (2.0 if cfg.model == "vae" else 0.0)
        self.g_norm_avg, self.g_norm_steps = 0.0, 0
        # wrap whenever a process group exists (even world size 1, so the DDP path is testable)
        ddp = dist.is_available() and dist.is_initialized()
        self.G_ddp = DDP(G) if ddp else G
        self.D_ddp = DDP(D) if ddp else D

    # ------------------------------------------------------------------ state kept across resumes
    def pause_state(self) -> dict[str, str]:
        """The phase state a checkpoint must keep (string metadata), restored by `load_pause_state`."""
        return {"d_paused": str(int(self.d_paused)), "g_norm_avg": repr(self.g_norm_avg)}

    def load_pause_state(self, extra: dict[str, str]) -> None:
        """Restore what `pause_state` wrote (a checkpoint's string metadata)."""
        self.d_paused = extra.get("d_paused") == "1"
        self.g_norm_avg = float(extra.get("g_norm_avg", "0.0"))
        self.g_norm_steps = 20 if self.g_norm_avg > 0 else 0

    # ------------------------------------------------------------------ schedule
    def current_weights(self, step: int) -> LossWeights:
        """Loss weights at `step`, with the image-loss warm start.

        For the first `img_warmup` steps (after the bridge phase) G is trained on the image loss
        alone (no comparator, no D); over the next `img_warmup` steps the feature and adversarial
        terms ramp in linearly while λ_img moves from 1 to its final value.
        """
        w, n = self.weights, self.cfg.img_warmup
        step = step - (self.cfg.bridge_steps if self.bridge_layer else 0)
        if not n or step >= 2 * n or not w.img:
            return w
        if step < n:
            return LossWeights(feat=0.0, adv=0.0, img=1.0)
        r = (step - n) / n
        return LossWeights(feat=r * w.feat, adv=r * w.adv, img=(1 - r) + r * w.img)

    def step(self, x: torch.Tensor, y: torch.Tensor | None, step: int) -> dict[str, Any]:
        """Optimisation step number `step` on images x (and cached features y); returns its stats."""
        cfg, w = self.cfg, self.current_weights(step)
        torch.manual_seed(rng_seed(cfg.seed * 1_000_003 + step))  # dropout / VAE noise: a function of step
        amp_ctx = autocast(self.device, self.precision)
        if self.bridge_layer is not None and step < cfg.bridge_steps:
            return self.bridge_step(x, y, step, amp_ctx)
        y, c_real = self.targets(x, y, w, amp_ctx)
        with amp_ctx:
            if cfg.model == "inverter":
                fake, mu, logvar = self.G_ddp(y), None, None
            else:
                fake, mu, logvar = self.G_ddp(x, h=y)
        stats: dict[str, Any] = {}
        y = y if cfg.model == "inverter" else None  # D is conditioned on the inverted features only
        l_discr = self.d_step(x, fake, y, amp_ctx) if w.adv and not self.d_paused else None
        total, parts = self.g_loss(w, x, fake, y, c_real, mu, logvar, amp_ctx)
        if l_discr is None and w.adv:
            with torch.no_grad(), amp_ctx:
                l_discr = discr_loss(self.D(self.d_view(x), y), self.D(self.d_view(fake.detach()), y))
        if not torch.isfinite(total):
            raise NonFiniteLoss(f"non-finite loss at step {step} ({parts})")
        g_paused = self.update_pauses(l_discr, parts, stats) if w.adv and l_discr is not None else False
        if not g_paused:
            self.optG.zero_grad(set_to_none=True)
            total.backward()
            self.clip_g_gradient(stats)
            self.optG.step()
        stats.update(parts)
        stats.update(total=float(total.detach()), d_paused=self.d_paused, g_paused=g_paused,
                     w_img=w.img, w_feat=w.feat, w_adv=w.adv)
        return stats

    # ------------------------------------------------------------------ phases
    def bridge_step(self, x: torch.Tensor, y: torch.Tensor | None, step: int, amp_ctx) -> dict[str, Any]:
        """Fit only the bridge of an fc G started from a conv-layer G: predict E(x) at the
        conv layer from the fc code (squared error / mean square of the target)."""
        cfg = self.cfg
        with torch.no_grad(), amp_ctx:
            layers = [self.bridge_layer] + ([] if y is not None else [self.feat_layer])
            feats = self.encoder(x, layers)
            y = (y.to(self.device) if y is not None else feats[self.feat_layer]).float()
            target = feats[self.bridge_layer].float()
        # G.bridge runs outside DDP's forward: keep DDP's reducer out of it, average by hand below
        quiet = self.G_ddp.no_sync() if isinstance(self.G_ddp, DDP) else contextlib.nullcontext()
        stats: dict[str, Any] = {}
        with quiet:
            with amp_ctx:
                if cfg.model == "vae":  # the VAE in pool5 space: heads + bridge, with the KL term
                    mu, logvar = self.G.encode_features(y)
                    pred = self.G.decoder.bridge(self.G.reparameterize(mu, logvar)).float()
                else:
                    pred = self.G.bridge(y.flatten(1)).float()
            loss = (pred - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-8)
            stats["bridge"] = float(loss.detach())
            if cfg.model == "vae":
                kl = kl_loss(mu, logvar)
                stats["kl"] = float(kl.detach())
                loss = loss + cfg.w_kl * kl
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite bridge loss at step {step}")
            self.optG.zero_grad(set_to_none=True)
            loss.backward()
        if self.world > 1:
            for p in self.G.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        self.clip_g_gradient(stats)
        self.optG.step()
        return {**stats, "total": float(loss.detach())}

    @torch.no_grad()
    def targets(self, x: torch.Tensor, y: torch.Tensor | None, w: LossWeights, amp_ctx):
        """(y, c_real): the features G reads (the cached `y`, or E(x)) and the comparator's
        features of the real images (None without L_feat); one encoder pass for both when the
        comparator is the encoder itself (pool5 → pool5)."""
        cfg, c_real = self.cfg, None
        with amp_ctx:
            if y is not None:
                y = y.to(self.device).float()
            elif cfg.model == "inverter" or self.vae_frozen:
                shared = w.feat and self.comparator is self.encoder
                layers = [self.feat_layer] + ([self.comp_layer] if shared else [])
                feats = self.encoder(x, layers)
                y = feats[self.feat_layer].float()
                c_real = feats[self.comp_layer].float() if shared else None
            if w.feat and c_real is None:
                c_real = self.comparator(x, [self.comp_layer])[self.comp_layer].float()
        return y, c_real

    def d_view(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of a batch: randomly translated by up to cfg.d_shift px (real and fake alike)."""
        return random_shift(images, self.cfg.d_shift)

    def d_step(self, x: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None, amp_ctx) -> torch.Tensor:
        """One discriminator update on real x against G's (detached) output; returns L_discr."""
        with amp_ctx:
            d_real = self.D_ddp(self.d_view(x), y)
            d_fake = self.D_ddp(self.d_view(fake.detach()), y)
        l_discr = discr_loss(d_real, d_fake)
        self.optD.zero_grad(set_to_none=True)
        l_discr.backward()
        self.optD.step()
        return l_discr

    def g_loss(self, w: LossWeights, x, fake, y, c_real, mu, logvar, amp_ctx) -> tuple[torch.Tensor, dict]:
        """G's loss λ_feat·L_feat + λ_adv·L_adv + λ_img·L_img (+ λ_KL·KL for the VAE) and its parts;
        D's parameters are frozen while its gradient flows into G."""
        with amp_ctx:
            c_fake = self.comparator(fake, [self.comp_layer])[self.comp_layer] if w.feat else None
            d_fake_g = None
            if w.adv:
                self.D.requires_grad_(False)
                d_fake_g = self.D(self.d_view(fake), y)
        total, parts = generator_loss(w, fake=fake, real=x, c_fake=c_fake, c_real=c_real, d_fake=d_fake_g)
        if w.adv:
            self.D.requires_grad_(True)
        if mu is not None:
            kl = kl_loss(mu, logvar)
            total = total + self.cfg.w_kl * kl
            parts["kl"] = float(kl.detach())
        return total, parts

    def update_pauses(self, l_discr: torch.Tensor, parts: dict[str, Any], stats: dict[str, Any]) -> bool:
        """The pause hysteresis of the original code on r = L_discr / L_adv (averaged over ranks,
        so every rank decides alike): pause D below d_pause_below until r rises above
        d_resume_above; skip G's update while r > g_pause_above. Returns whether G skips."""
        cfg = self.cfg
        pair = torch.tensor([float(l_discr.detach()), parts["adv"]])
        if self.world > 1:
            # every rank must take the same pause decisions, or DDP's collectives desynchronise
            pair = pair.to(self.device)
            dist.all_reduce(pair)
            pair = pair.cpu() / self.world
        ratio = float(pair[0]) / max(float(pair[1]), 1e-8)
        if self.d_paused and ratio > cfg.d_resume_above:
            self.d_paused = False
        elif not self.d_paused and ratio < cfg.d_pause_below:
            self.d_paused = True
        stats["discr"] = float(l_discr.detach())
        return ratio > cfg.g_pause_above

    def clip_g_gradient(self, stats: dict[str, Any]) -> None:
        """Adaptive clipping of G's gradient norm at `g_clip` × its running mean (EMA 0.99 of the
        clipped norms; the first 20 steps only measure). Adam turns one outlier gradient into ~20
        large steps along it (its first moment outlives the second's rise); on the VAE such a
        spike blew up the KL (2,000 → 6,000 nats) and the decoder never recovered."""
        if not self.g_clip:
            return
        params = [p for p in self.G.parameters() if p.grad is not None]
        limit = self.g_clip * self.g_norm_avg if self.g_norm_steps >= 20 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
        if not math.isfinite(norm):
            return
        self.g_norm_avg = norm if self.g_norm_steps == 0 else 0.99 * self.g_norm_avg + 0.01 * min(norm, limit)
        self.g_norm_steps += 1
        stats["g_norm"] = norm
