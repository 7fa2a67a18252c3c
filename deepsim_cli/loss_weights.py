"""Loss presets and weights (no torch: the CLI builds its choices and defaults from these)."""

from __future__ import annotations

from dataclasses import dataclass

LOSS_PRESETS = {
    "img": ("img",),
    "img+adv": ("img", "adv"),
    "img+feat": ("img", "feat"),
    "feat+adv": ("feat", "adv"),
    "full": ("feat", "adv", "img"),
}


@dataclass(frozen=True)
class LossWeights:
    """λ_feat, λ_adv, λ_img of the DeePSiM loss (means over features/pixels; see losses.generator_loss)."""
    feat: float = 1.0
    adv: float = 0.02
    img: float = 2.0

    def select(self, preset: str) -> "LossWeights":
        """Zero the terms a --loss preset leaves out (the ablations of paper Fig. 1)."""
        if preset not in LOSS_PRESETS:
            raise ValueError(f"unknown loss preset {preset!r}; valid: {', '.join(LOSS_PRESETS)}")
        on = LOSS_PRESETS[preset]
        img = self.img if "img" in on else 0.0
        if on == ("img",) or on == ("img", "adv"):
            img = 1.0  # image loss alone: its absolute scale only sets the learning-rate balance
        return LossWeights(feat=self.feat if "feat" in on else 0.0,
                           adv=self.adv if "adv" in on else 0.0, img=img)


DEFAULT_WEIGHTS = LossWeights()
