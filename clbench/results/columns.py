"""What the leaderboard shows of each metric: which metrics and cost columns, their direction,
labels, formats and ranges; shared by the aggregation and the tables."""

from __future__ import annotations

from clbench.run.settings import per_strategy_settings

METRICS = ["acc", "acc_test_se", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf10_noise", "wf100", "aaa",
           "gap_depth", "gap_noise", "gap_iters_to_recover", "gap_unrecovered", "drop_kept", "dip_depth",
           "wall_seconds", "train_iters_per_second",
           "train_flops", "memory_samples", "memory_bytes", "trainable_params", "memory_capacity", "iterations"]
#: cost columns (Harun et al. 2023): shown beside accuracy, mean over seeds
COST = ["train_flops", "memory_samples", "memory_bytes", "trainable_params", "wall_seconds"]
#: decimals of a column as people read it (accuracy-like ones in percent): one format per column
DECIMALS = {"gap_iters_to_recover": 1, "wall_seconds": 1, "train_iters_per_second": 1, "iterations": 0}
#: the range a metric's value cannot leave (as a fraction for accuracy-like ones): a confidence
#: interval reaching beyond it is marked, not shown as if it were possible
RANGE = {**{m: (0.0, 1.0) for m in ["acc", "min_acc", "wc_acc", "wf10", "wf10_noise", "wf100", "aaa", "gap_unrecovered",
                                     "acc_test_se"]},
         "bwt": (-1.0, 1.0), "fwt": (-1.0, 1.0), "forgetting": (-1.0, 1.0), "gap_depth": (-1.0, 1.0),
         "gap_noise": (-1.0, 1.0), "drop_kept": (-1.0, 1.0), "dip_depth": (-1.0, 1.0),
         "gap_iters_to_recover": (0.0, float("inf")), "wall_seconds": (0.0, float("inf"))}
#: which way is better, shown beside each column's name (↑ higher, ↓ lower)
BETTER = {"acc": "↑", "bwt": "↑", "fwt": "↑", "forgetting": "↓", "min_acc": "↑", "wc_acc": "↑", "wf10": "↓",
          "wf100": "↓", "aaa": "↑", "gap_depth": "↓", "drop_kept": "↓", "dip_depth": "↓", "gap_iters_to_recover": "↓",
          "gap_unrecovered": "↓",
          "train_flops": "↓", "memory_samples": "↓", "memory_bytes": "↓", "trainable_params": "↓",
          "wall_seconds": "↓"}
#: a noise floor's column is followed by its statistic's verdict against it (leaderboard column, header)
VERDICTS = {"gap_noise": ("gap_verdict", "gap vs noise"), "wf10_noise": ("wf10_verdict", "WF10 vs noise")}
#: a paired difference from the reference row below this p-value is called significant
ALPHA = 0.05
#: metrics whose spread across orderings the leaderboard reports (``--orderings K``)
SPREAD_METRICS = ["acc", "min_acc", "wc_acc", "bwt", "forgetting", "gap_depth"]
#: shown as percentages for people (fractions in the CSV)
ACCURACY_LIKE = {"acc", "acc_test_se",
                 "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "wf10", "wf10_noise", "wf100", "aaa", "gap_depth",
                 "gap_unrecovered", "gap_noise", "drop_kept", "dip_depth"}
LABELS = {"acc": "ACC", "acc_test_se": "ACC test-set SE",
          "bwt": "BWT", "fwt": "FWT", "forgetting": "FORG", "min_acc": "min-ACC", "wc_acc": "WC-ACC",
          "wf10": "WF10", "wf10_noise": "WF10 noise floor", "wf100": "WF100", "aaa": "AAA", "gap_depth": "gap depth",
          "gap_noise": "gap noise floor", "gap_iters_to_recover": "iters to recover",
          "gap_unrecovered": "% dips unrecovered", "drop_kept": "unrecovered drop", "dip_depth": "dip depth",
          "wall_seconds": "s/run",
          "train_iters_per_second": "it/s", "train_flops": "train GFLOP", "memory_samples": "memory (samples)",
          "memory_bytes": "memory (MB)", "trainable_params": "trainable params", "memory_capacity": "memory budget",
          "iterations": "updates"}

#: optimiser settings a strategy may have of its own (``Experiment.strategy_settings``)
OWN_SETTINGS = per_strategy_settings()
