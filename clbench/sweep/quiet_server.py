"""Imported first by the workers' fork server only (``processes.PRELOAD``): it ignores Ctrl-C from
here on. The server shares the terminal's process group, and Python's fork server ignores SIGINT
only once its preloads (torch, some 5-8 s) are imported: a Ctrl-C in those first seconds printed
its traceback beside the CLI's one line. The CLI decides what an interruption ends."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
