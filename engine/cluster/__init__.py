"""The engine beyond one machine: Ray Data and Spark (``pip install 'nere[ray]'`` / ``'nere[spark]'``).

Nothing here is imported by ``nere.engine``; ray and pyspark are imported only inside
:mod:`nere.engine.cluster.ray_data`, :mod:`~nere.engine.cluster.ray_run` and
:mod:`~nere.engine.cluster.spark`. Semantics and a plan for GPU nodes: docs/scale.md.

- :mod:`.batches`: one Arrow batch of (id, text) rows in, the engine's tables out; the
  engine is built once per worker process. Shared by Ray and Spark.
- :mod:`.blocks`: input blocks (whole row groups) and their exactly-once commit.
- :mod:`.ray_data`: :class:`~.ray_data.ExtractBatches` for ``Dataset.map_batches`` and
  :func:`~.ray_data.extract_dataset`.
- :mod:`.ray_run`: ``nere extract --ray``: the single-machine output folder, written
  exactly once per document by actors, resumable after the driver dies.
- :mod:`.spark`: a ``mapInArrow`` recipe.
- :mod:`.cli`: the ``--ray`` branch of ``nere extract`` (imports ray only when used).
"""
