"""clbench strategies: how a learner updates. Importable on their own::

    from strategies import EWC
    ewc = EWC(model, optimizer, ewc_lambda=100.0)
    for x, y in batches:
        ewc.observe(x, y)
"""

from strategies.base import Finetune, Strategy
from strategies.ewc import EWC
from strategies.gem import GEM
from strategies.joint import Joint
from strategies.models import MODELS, build_model
from strategies.nmc import NMC
from strategies.registry import REGISTRY, create, strategy_entry
from strategies.replay import ER
from strategies.viewbatch import ViewBatch

__all__ = ["ER", "EWC", "GEM", "MODELS", "NMC", "REGISTRY", "Finetune", "Joint", "Strategy", "ViewBatch",
           "build_model", "create", "strategy_entry"]
