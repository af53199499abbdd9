"""Shared test setup.

- One torch thread per test process: the CI machine has 2 cores and oversubscribed threads
  make small models many times slower.
- Real datasets: a test marked ``@pytest.mark.datasets("conll04", ...)``, or one that hits
  ``DatasetNotFoundError``, is skipped with the reason when the datasets are absent (a
  fresh clone without ``$NERE_DATASETS`` or ``../shared/datasets``). With
  ``NERE_REQUIRE_DATASETS=1`` (set by ``.ci/run``) the same tests are errors instead: CI
  never skips them silently.
"""
from __future__ import annotations

import os

import pytest

try:  # imported before any test starts Ray: pytest's import of it after Ray has started fails
    import hypothesis  # noqa: F401  # on CPython 3.11 ("AST constructor recursion depth mismatch")
except ImportError:
    pass

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # torch is optional: engine tests run without it
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass

from nere.train.datasets import DatasetNotFoundError, dataset_root  # noqa: E402

REQUIRE_VAR = "NERE_REQUIRE_DATASETS"


def datasets_required() -> bool:
    return os.environ.get(REQUIRE_VAR, "").strip() not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"datasets(*folders): needs these dataset folders (default conll04); skipped when absent, "
        f"an error when {REQUIRE_VAR}=1",
    )


def _absent(err: Exception) -> None:
    """Skip the running test because a dataset is absent, or fail it when CI requires them."""
    if datasets_required():
        pytest.fail(f"{REQUIRE_VAR} is set and a dataset is missing: {err}", pytrace=False)
    pytest.skip(f"dataset absent: {err}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Marked tests check their folders first; a fixture that loads an absent dataset skips
    its tests too (each of them: a failed module fixture is re-raised from pytest's cache)."""
    marker = item.get_closest_marker("datasets")
    for name in (marker.args or ("conll04",)) if marker else ():
        try:
            dataset_root(name)
        except DatasetNotFoundError as err:
            _absent(err)
    try:
        return (yield)
    except DatasetNotFoundError as err:
        _absent(err)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        return (yield)
    except DatasetNotFoundError as err:
        _absent(err)
