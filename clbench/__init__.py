"""clbench: continual-learning benchmarks that measure forgetting and the stability gap."""

__version__ = "0.1.0"
