"""Distribution: choose the strategy (CPU, GPU, ``MirroredStrategy``, multi-worker, TPU) and live with it.

- `strategy`: ``select(name)`` and the precision policy;
- `tpu`: connect to a TPU, or say in one line why not;
- `cluster`: start a multi-worker cluster (``TF_CONFIG``) without silent waits;
- `preemption`: stop on SIGTERM / Ctrl-C without losing work;
- `all_reduce`: the packed gradient all-reduce of the train step;
- `colab`: notebook helpers (the TPU if it works, else a fallback).
"""
