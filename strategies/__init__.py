"""clbench strategies: how a learner updates. Importable on their own::

    from clbench.strategies import EWC
    ewc = EWC(model, optimizer, ewc_lambda=100.0)
    for x, y in batches:
        ewc.observe(x, y)
"""

from clbench.strategies.base import Finetune, Strategy
from clbench.strategies.ewc import EWC
from clbench.strategies.gem import GEM
from clbench.strategies.joint import Joint
from clbench.strategies.models import MODELS, build_model
from clbench.strategies.nmc import NMC
from clbench.strategies.registry import REGISTRY, create
from clbench.strategies.replay import ER
from clbench.strategies.viewbatch import ViewBatch

__all__ = ["ER", "EWC", "GEM", "MODELS", "NMC", "REGISTRY", "Finetune", "Joint", "Strategy", "ViewBatch",
           "build_model", "create"]
