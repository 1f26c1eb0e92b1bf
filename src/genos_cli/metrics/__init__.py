"""`genos metrics`: the training log read live (dashboard) or whole (summaries, plots)."""
