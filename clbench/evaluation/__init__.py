"""Continual evaluation: the evaluator, the schedules that decide when it runs, the metrics read
from its log and the cost meter."""
