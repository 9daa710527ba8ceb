"""Nearest-mean classifier on frozen features."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from scenarios.errors import InputError
from strategies.backbones import load_backbone
from strategies.base import Strategy


class NMC(Strategy):
    """NMC baseline of Janson, Zhang, Aljundi & Elhoseiny, "A simple baseline that questions the
    use of pretrained models in continual learning" (2022).

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

    def __init__(self, model=None, optimizer=None, *, backbone: str = "pixels", cosine: bool = False,
                 image_size: int | None = None, raw_inputs: bool = False, **common):
        self.backbone_spec = backbone
        net = load_backbone(backbone, image_size)
        super().__init__(net, None, **{k: v for k, v in common.items() if k not in ("lr", "momentum")})
        self.cosine = cosine
        #: undo the dataset's mean/std normalisation before the backbone (Janson et al. feed [0, 1] pixels)
        self.raw_inputs = raw_inputs
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
            if self.raw_inputs and self._unnorm is not None and x.dim() == 4:
                mean, std = (t.to(x.device) for t in self._unnorm)
                x = x * std + mean
            return F.normalize(self.model(x).float(), dim=1)

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
                "inputs": "raw [0, 1]" if self.raw_inputs else "dataset-normalised",
                "features": "L2-normalised", "means": "re-normalised" if self.cosine else "not re-normalised"}
