"""Invoke tasks, one module per area; :mod:`crossnix_tasks.collection` gathers them."""
