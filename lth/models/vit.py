"""A small Vision Transformer for small images (Dosovitskiy et al. 2021).

Non-overlapping patches embedded by a strided convolution, a class token, a learned position embedding,
pre-norm ``nn.TransformerEncoderLayer`` blocks (GELU, no dropout), a final LayerNorm and a linear head ``out``
on the class token. The defaults are ViT-Lite-7/4 (Hassani et al. 2021): 3.72M parameters on CIFAR-10.
The attention projections sit in ``in_proj_weight``, which :func:`lth.core.masks.prunable_parameters` prunes.
"""

from __future__ import annotations

import torch
from torch import nn

from lth.core.anatomy import NotShrinkable
from lth.models.common import refuse


class ViT(nn.Module):
    """``patches`` (conv), class token, position embedding, ``blocks``, ``norm``, ``out``."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        patch_size: int = 4,
        dim: int = 256,
        depth: int = 7,
        heads: int = 4,
        mlp_dim: int = 512,
    ) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
            refuse(f"ViT patch_size {patch_size} must divide image_size {image_size}; allowed: {divisors}")
        if dim % heads:
            refuse(f"ViT dim {dim} must be a multiple of heads {heads}")
        tokens = (image_size // patch_size) ** 2 + 1
        self.patches = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(
                    dim, heads, mlp_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
                )
                for _ in range(depth)
            )
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, num_classes)
        self._init()

    def _init(self) -> None:
        """Truncated-normal (std 0.02) tokens and positions, Glorot-uniform projections, zero biases."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.xavier_uniform_(m.in_proj_weight)
                nn.init.zeros_(m.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.position
        return self.out(self.norm(self.blocks(x)[:, 0]))

    def lth_chain(self) -> nn.Sequential:
        """Not a chain: export says why it does not shrink."""
        raise NotShrinkable(
            "ViT: the residual stream ties the embedding dimension across all blocks and attention mixes tokens; "
            "removing units applies to plain chains only"
        )
