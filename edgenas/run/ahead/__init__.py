"""Work done ahead of need while a candidate trains: ``worker_pools`` (candidates trained at once in
processes or Ray tasks) and ``latency_prefetch`` (candidates' latencies measured on another thread).

The third such mechanism, the speculative driver that decides which candidates to start early, is
``edgenas.search.speculation``: it is pure (no torch, no run directory) and ``search.replay`` drives
it against published logs, so it stays in the search layer, below ``run``.
"""
