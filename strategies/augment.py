"""Batched image augmentations on the device (no PIL loop per sample).

Random parameters come from a CPU ``torch.Generator`` (so they follow the run's seed on any
device); the image work is one ``affine_grid``/``grid_sample`` per batch plus masks.

Augmentation is a setting of every strategy (``augment``), so a baseline and its view-batch
wrapper see the same transform family and a comparison between them measures the views, not
the augmentation: ``none``, ``weak`` (shift, flip on colour images) or ``standard`` (weak plus
rotation, scale, noise and an erased square).
"""

from __future__ import annotations

import math
from typing import get_args

import torch
from torch.nn import functional as F

from clbench.common.validation import Family


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
            flip: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def weak(x: torch.Tensor, g: torch.Generator, flip: bool) -> torch.Tensor:
    """Random shift of up to 1/8 of the side (crop with padding), horizontal flip when allowed."""
    n = len(x)
    shift = 2 * (1 / 8)
    flips = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    zeros = torch.zeros(n)
    return _affine(x, zeros, torch.ones(n), _uniform(n, -shift, shift, g), _uniform(n, -shift, shift, g), flips)


def strong(x: torch.Tensor, g: torch.Generator, flip: bool) -> torch.Tensor:
    """Weak shift plus rotation (+-15 degrees), scale (0.85-1.15), Gaussian noise and a random erased square."""
    n = len(x)
    shift = 2 * (1 / 8)
    flips = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    out = _affine(x, _uniform(n, -math.pi / 12, math.pi / 12, g), _uniform(n, 0.85, 1.15, g),
                  _uniform(n, -shift, shift, g), _uniform(n, -shift, shift, g), flips)
    out = out + 0.1 * torch.randn(out.shape, generator=g).to(out.device, out.dtype)
    h, w = out.shape[-2:]
    side = max(1, h // 4)
    cy = torch.randint(0, h - side + 1, (n,), generator=g)
    cx = torch.randint(0, w - side + 1, (n,), generator=g)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    erase = ((ys >= cy.view(n, 1, 1)) & (ys < cy.view(n, 1, 1) + side) &
             (xs >= cx.view(n, 1, 1)) & (xs < cx.view(n, 1, 1) + side))
    return out.masked_fill(erase.unsqueeze(1).to(out.device), 0.0)


#: augmentation families, weakest first
FAMILIES: tuple[str, ...] = get_args(Family)



def apply(x: torch.Tensor, family: str, g: torch.Generator) -> torch.Tensor:
    """``x`` (a batch of normalised images ``[N, C, H, W]``) through one family; other tensors
    (flat features) pass unchanged. Flips only on 3-channel images (digits must not mirror)."""
    if family == "none" or x.dim() != 4 or len(x) == 0:
        return x
    flip = x.shape[1] == 3
    return weak(x, g, flip) if family == "weak" else strong(x, g, flip)


def apply_views(x: torch.Tensor, family: str, views: int, g: torch.Generator) -> torch.Tensor:
    """View groups (``views`` consecutive rows per sample): the first view of each group, the
    anchor, gets at most ``weak`` (Kang et al.'s anchor), the others get ``family``."""
    if views <= 1:
        return apply(x, family, g)
    if family == "none" or x.dim() != 4 or len(x) == 0:
        return x
    grouped = x.view(-1, views, *x.shape[1:])
    anchors = apply(grouped[:, 0], "weak", g).unsqueeze(1)
    others = apply(grouped[:, 1:].reshape(-1, *x.shape[1:]), family, g)
    return torch.cat([anchors, others.view(len(grouped), views - 1, *x.shape[1:])], 1).view_as(x)
