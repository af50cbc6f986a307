"""The engine: the per-event step and the runners that feed it batches and commit its state.

- the step: ``core`` (``Core``, what runners call: compiled unless ``run.engine = "python"``),
  ``step`` (the step in Python, (state, batch) -> (new state, outputs): the reference),
  ``compiled``, ``kernel`` and ``packing`` (the same step compiled with numba, over arrays),
  ``links`` and ``lifecycle`` (identity links, erasures and expiry between stretches of the kernel)
- its state: ``state`` (what a pipeline keeps, and how it is committed to and loaded from a
  store, in the layout of :mod:`liveprofile.store.layout`)
- runners, thin adapters around the step: ``local`` (a source into a store, batch by batch);
  the Redis Streams runner and its operations are in :mod:`liveprofile.redis`
- beside them: ``changes`` (where segment changes go) and ``gc_tuning``
"""
