"""What runs leave behind, read back: the leaderboard (collection, aggregation, tables, notes),
plots and experiment trackers. Nothing here trains."""
