"""Shared test setup: one torch thread per test process (the CI machine has 2 cores and
oversubscribed threads make small models many times slower)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # torch is optional: engine tests run without it
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass
