"""An image classifier with Wang et al.'s contrastive heads (section 4.4, fig. 6).

    image --backbone B (any zoo backbone)--> `out` map --global average pool--> h (N x C)
      h --fc----------------------------------> class logits          (eq. 4, the classifier H_cls)
      h --head_s: Linear-ReLU-Linear, 128 out--> z for eq. 2            (H^s_cls)
      h --head_u: Linear-ReLU-Linear, 128 out--> z for eq. 3            (H^u_cls)

All three streams share B and have their own heads. Only the heads a run uses are built
(`contrastive_heads=("s", "u")`, either, or none), so every parameter gets a gradient under DDP and
a CE-only model is a plain classifier. `forward(x)` returns logits (what evaluation, export and
linear probes call); `forward_streams(x, n_ce, n_s, n_u)` runs B once on the concatenated batch of
the three streams (BatchNorm sees all of them) and returns each stream's outputs. The backbone is
the attribute `backbone`, so pretraining checkpoints (`backbone.*`) load into it and its own
checkpoints load into `marsedge.ssl.features.load_backbone`.
"""

from __future__ import annotations

import torch
from torch import nn

from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig, build_backbone

CLASSIFIER_HEAD = "classifier"  # ModelConfig.head of an image classifier


class MLPHead(nn.Module):
    """The paper's 2-layer MLP head: Linear(C, hidden) -> ReLU -> Linear(hidden, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)


class ImageClassifier(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        config: ModelConfig,
        contrastive_heads: tuple[str, ...] = (),
        head_dim: int = 128,
    ) -> None:
        super().__init__()
        unknown = set(contrastive_heads) - {"s", "u"}
        if unknown:
            raise ConfigError(f"unknown contrastive head(s) {sorted(unknown)}; valid: s, u")
        self.backbone = backbone
        self.config = config
        dim = backbone.out_channels["out"]
        self.fc = nn.Linear(dim, num_classes)
        self.head_s = MLPHead(dim, head_dim) if "s" in contrastive_heads else None
        self.head_u = MLPHead(dim, head_dim) if "u" in contrastive_heads else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h: the globally pooled final feature map, N x C."""
        return self.backbone(x)["out"].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def forward_streams(
        self, x: torch.Tensor, n_ce: int, n_s: int = 0, n_u: int = 0
    ) -> dict[str, torch.Tensor]:
        """x = [CE images (n_ce) | eq. 2 views 1 and 2 (2 n_s) | eq. 3 views 1 and 2 (2 n_u)] ->
        {"logits": n_ce x K, "z_s": 2 n_s x D, "z_u": 2 n_u x D} (absent streams left out)."""
        h = self.features(x)
        out = {"logits": self.fc(h[:n_ce])}
        if n_s:
            if self.head_s is None:
                raise ConfigError(
                    "the model has no eq. 2 head (build it with contrastive_heads containing 's')"
                )
            out["z_s"] = self.head_s(h[n_ce : n_ce + 2 * n_s])
        if n_u:
            if self.head_u is None:
                raise ConfigError(
                    "the model has no eq. 3 head (build it with contrastive_heads containing 'u')"
                )
            out["z_u"] = self.head_u(h[n_ce + 2 * n_s : n_ce + 2 * n_s + 2 * n_u])
        return out


def build_classifier(
    cfg: ModelConfig, contrastive_heads: tuple[str, ...] = (), head_dim: int = 128
) -> ImageClassifier:
    """The classifier a ModelConfig describes (`head: classifier`; output_stride 32 is the usual)."""
    if cfg.head != CLASSIFIER_HEAD:
        raise ConfigError(f"model.head must be {CLASSIFIER_HEAD!r} for an image classifier, got {cfg.head!r}")
    if cfg.num_classes < 2:
        raise ConfigError(f"model.num_classes must be >= 2, got {cfg.num_classes}")
    backbone = build_backbone(cfg.backbone, cfg.output_stride, cfg.in_channels, cfg.stem_pool_padding)
    return ImageClassifier(backbone, cfg.num_classes, cfg, contrastive_heads, head_dim)
