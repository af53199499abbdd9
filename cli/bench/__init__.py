"""``nere bench``: latency, throughput and memory of exported bundles.

``command`` holds the click command and the report; ``measure`` the timed passes over one
Engine; ``proc`` the child processes whose peak RSS is measured; ``compute`` the FLOP
counts; ``baseline`` the eager PyTorch runner; ``report`` report.md and the plots.
Nothing is imported here, so ``import nere.bench.measure`` pulls no optional extra.
"""
