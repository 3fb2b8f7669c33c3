"""Fleet deployment: the per-target pipeline, its events, progress view and report."""
