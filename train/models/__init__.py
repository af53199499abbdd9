"""Model kinds, registered by (task, name) in :mod:`nere.train.registry`."""
