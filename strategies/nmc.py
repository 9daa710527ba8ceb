"""Nearest-mean classifier on frozen features."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch.nn import functional as F

from clbench.common.errors import InputError
from clbench.common.validation import Count, checked
from clbench.strategies.backbones import load_backbone
from clbench.strategies.base import Strategy

Inputs = Literal["auto", "dataset", "raw", "weights"]
INPUTS: tuple[str, ...] = get_args(Inputs)


class NMC(Strategy):
    """NMC baseline of Janson, Zhang, Aljundi & Elhoseiny, "A simple baseline that questions the
    use of pretrained models in continual learning" (2022). Their baseline is this classifier on
    *pretrained* features (ViT-B/16); with the default ``pixels`` backbone it is a nearest class
    mean on raw pixels, and the leaderboard names it so (``label``).

    ``inputs``: what the backbone is fed. ``auto`` = ``weights`` for pretrained torchvision/timm
    backbones (the [0, 1] image normalised with the weights' mean/std), ``dataset`` otherwise (the
    dataset's own normalisation); ``raw`` = [0, 1] pixels (what Janson et al.'s code feeds).

    Features of a frozen backbone are L2-normalised; each class keeps a running sum and count
    (task-free: a batch updates them whatever its task); prediction is the class whose mean is
    nearest in Euclidean distance among the classes seen so far. As in the authors' code the
    means are *not* re-normalised (``cosine=True`` re-normalises them). No gradient is taken, so
    the run's model/optimiser are ignored. The backbone being frozen, the evaluator embeds its
    samples once (``frozen_features``) and every evaluation only compares against the means.
    """

    name = "nmc"
    uses_model = False
    frozen_features = True

    @checked
    def __init__(self, model=None, optimizer=None, *, backbone: str = "pixels", cosine: bool = False,
                 image_size: Count | None = None, inputs: Inputs = "auto", **common):
        self.backbone_spec = backbone
        net = load_backbone(backbone, image_size)
        if inputs == "auto":
            inputs = "weights" if net.weights_norm is not None else "dataset"
        if inputs == "weights" and net.weights_norm is None:
            raise InputError(f"backbone {backbone} has no pretrained weights' normalisation; use inputs=dataset or raw")
        super().__init__(net, None, **{k: v for k, v in common.items() if k not in ("lr", "momentum")})
        self.cosine = cosine
        #: undo the dataset's mean/std normalisation before the backbone, then apply the weights' (if asked)
        self.inputs = inputs
        self._unnorm: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def before_stream(self, scenario) -> None:
        super().before_stream(scenario)
        d = scenario.tasks[0].train
        shape = (1, -1, 1, 1)
        self._unnorm = (torch.tensor(d.mean).view(shape), torch.tensor(d.std).view(shape))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.inputs != "dataset" and self._unnorm is not None and x.dim() == 4:
                mean, std = (t.to(x.device) for t in self._unnorm)
                x = x * std + mean
                if self.inputs == "weights":
                    wm, ws = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in self.model.weights_norm)
                    if x.shape[1] == 1:  # grey images are repeated to the backbone's channels
                        x = x.expand(-1, wm.shape[1], -1, -1)
                    x = (x - wm) / ws
            return F.normalize(self.model(x).float(), dim=1)

    def memory_samples(self):
        return 0  # class sums and counts: bytes, measured by the runner

    def label_suffix(self) -> str:
        return f"[{self.backbone_spec}]"

    def observe(self, x, y, task_ids=None):
        f = self.embed(x)
        if self.sums is None:
            n = self.n_classes or int(y.max()) + 1
            self.sums = torch.zeros(n, f.shape[1], device=f.device, dtype=torch.float64)
            self.counts = torch.zeros(n, device=f.device, dtype=torch.float64)
        if int(y.max()) >= len(self.counts):
            raise InputError(f"label {int(y.max())} is outside the {len(self.counts)} classes NMC was built for")
        self.sums.index_add_(0, y, f.double())
        self.counts += torch.bincount(y, minlength=len(self.counts)).double()
        return torch.zeros((), device=f.device)

    def prediction_state(self) -> list[torch.Tensor]:
        """What predictions read (the backbone is frozen): the class sums and counts, for the
        snapshots of a schedule that looks back (``clbench.evaluation.snapshots``)."""
        return [] if self.sums is None else [self.sums, self.counts]

    def means(self) -> torch.Tensor:
        m = (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()
        return F.normalize(m, dim=1) if self.cosine else m

    def predict_from_features(self, f: torch.Tensor, task_ids=None) -> torch.Tensor:
        if self.sums is None:
            return torch.zeros(len(f), self.n_classes or 1, device=f.device)
        m = self.means().to(f.device)
        # squared distances through one matmul, |f|^2 + |m|^2 - 2 f.m with |f| = 1 (features are
        # L2-normalised): several times cheaper than cdist on cached evaluation features
        d2 = (m * m).sum(1) + 1.0 - 2 * (f @ m.T)
        logits = -d2.clamp_(min=0).sqrt_()
        logits = logits.masked_fill((self.counts == 0).to(f.device), float("-inf"))
        return self.mask_logits(logits, task_ids)

    @torch.inference_mode()
    def predict(self, x, task_ids=None):
        return self.predict_from_features(self.embed(x), task_ids)

    def config(self):
        return {**super().config(), "backbone": self.backbone_spec, "cosine": self.cosine,
                "inputs": {"raw": "raw [0, 1]", "dataset": "dataset-normalised",
                           "weights": f"[0, 1] normalised with the weights' mean/std {self.model.weights_norm}"}[
                    self.inputs],
                "features": "L2-normalised", "means": "re-normalised" if self.cosine else "not re-normalised"}
