"""Frozen feature extractors for the NMC baseline, loaded by name.

``pixels`` (flattened input), ``torchvision:<arch>`` (pretrained weights from the torch cache,
downloaded only where a network exists), ``timm:<name>`` (when timm is installed) and
``checkpoint:<path>`` (a dict with ``state_dict`` and ``arch``, read as weights only:
``torch.load(weights_only=True)``, so nothing in the file runs) and
``trusted-checkpoint:<path>`` (also a whole pickled ``nn.Module``: unpickling one runs whatever
code the file names, so only for a file you made or trust). A backbone that cannot be loaded
offline is one clear error naming what is missing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from clbench.common.errors import InputError


class FrozenBackbone(nn.Module):
    """Adapts inputs (channel repeat, resize) and returns flat features; never trained.

    ``weights_norm`` is the ``(mean, std)`` per channel that pretrained weights were trained with
    (ImageNet's for torchvision, the model's config for timm); the NMC baseline feeds such a
    backbone [0, 1] images normalised that way."""

    def __init__(self, net: nn.Module, channels: int | None = None, image_size: int | None = None,
                 weights_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
        super().__init__()
        self.net, self.channels, self.image_size = net, channels, image_size
        self.weights_norm = weights_norm
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True):  # the backbone stays in eval mode (frozen BN statistics)
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x[:, :self.channels]
        if self.image_size and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.net(x).flatten(1)


def _strip_head(net: nn.Module) -> nn.Module:
    for attr in ("fc", "classifier", "heads", "head"):
        if hasattr(net, attr) and isinstance(getattr(net, attr), nn.Module):
            setattr(net, attr, nn.Identity())
            return net
    return net


def load_backbone(spec: str, image_size: int | None = None) -> FrozenBackbone:
    kind, _, arg = spec.partition(":")
    if kind == "pixels":
        return FrozenBackbone(nn.Flatten())
    if kind == "torchvision":
        return _torchvision(arg, image_size or 224)
    if kind == "timm":
        return _timm(arg, image_size or 224)
    if kind in ("checkpoint", "trusted-checkpoint"):
        return _checkpoint(arg, image_size, trusted=kind == "trusted-checkpoint")
    raise InputError(f"unknown backbone {spec!r}; use pixels, torchvision:<arch>, timm:<name>, checkpoint:<path> "
                     "or trusted-checkpoint:<path>")


def _torchvision(arch: str, image_size: int) -> FrozenBackbone:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise InputError(f"torchvision has no model {arch!r} with pretrained weights") from None
    try:
        net = torchvision.models.get_model(arch, weights=weights)
    except Exception as e:  # noqa: BLE001 - offline download failures come in many types
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise InputError(f"the pretrained weights of torchvision:{arch} are not in the torch cache ({cache}) and "
                         f"could not be downloaded ({type(e).__name__}); copy that file there") from None
    return FrozenBackbone(_strip_head(net), 3, image_size, torchvision_normalisation(arch))


def torchvision_normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input ``(mean, std)`` of torchvision's default pretrained weights for ``arch`` (read from the
    weights' own transforms, no download)."""
    import torchvision

    t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)


def _timm(name: str, image_size: int) -> FrozenBackbone:
    try:
        import timm
    except ImportError:
        raise InputError("timm backbones need timm: pip install timm") from None
    try:
        net = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot load timm:{name} with pretrained weights ({type(e).__name__}: {e}); "
                         "put the weights in the Hugging Face cache where no network exists") from None
    cfg = timm.data.resolve_data_config({}, model=net)
    norm = (tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]))
    return FrozenBackbone(net, 3, image_size, norm)


def _checkpoint(path: str, image_size: int | None, trusted: bool = False) -> FrozenBackbone:
    """A saved backbone; weights only unless ``trusted`` (a full pickle runs code as it loads)."""
    import pickle

    from clbench.strategies.models import build_model

    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        if trusted:
            raise InputError(f"cannot read checkpoint {path}: {e}") from None
        raise InputError(f"checkpoint {path} holds more than weights (pickled objects, which run code as they "
                         "load): save {'arch': ..., 'state_dict': ...} instead, or, for a file you trust, use "
                         f"trusted-checkpoint:{path}") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read checkpoint {path}: {e}") from None
    if isinstance(obj, nn.Module):
        net = obj
    elif isinstance(obj, dict) and "state_dict" in obj and "arch" in obj:
        net = build_model(obj["arch"], obj.get("input_shape", (1, 28, 28)), obj.get("n_out", 10),
                          **obj.get("options", {}))
        try:
            net.load_state_dict(obj["state_dict"])
        except RuntimeError as e:
            raise InputError(f"checkpoint {path} does not fit architecture {obj['arch']}: {e}") from None
        net = _FeaturesOf(net)
    else:
        raise InputError(f"checkpoint {path} must hold an nn.Module or a dict with 'state_dict' and 'arch'")
    return FrozenBackbone(net, None, image_size)


class _FeaturesOf(nn.Module):
    """The penultimate features of a clbench network (everything but its head)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.inner = net

    def forward(self, x):
        return self.inner.features(x)
