"""One run: its settings, the one strategy lookup, the parts it is built from, the training loops
(clbench's own and Avalanche's) and the record it writes."""
