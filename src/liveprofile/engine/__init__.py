"""The engine: the per-event step and the runners that feed it batches and commit its state.

- the step, written once: ``core`` (``Core``, what runners call), ``compiled``, ``kernel`` and
  ``packing`` (the per-event work over arrays, compiled with numba; ``LIVEPROFILE_NO_JIT=1``
  runs it uncompiled, see ``jit``), ``step`` (the Python work of a batch around the kernel:
  the keys it reads, expiry, population, traits and segments), ``links``, ``lifecycle`` and
  ``foldnew`` (identity links, erasures and expiry between stretches of the kernel; a visitor
  logging in as a new user folded on the rows); ``rules``: the rules the kernel follows (decay,
  buckets, the cross hash, time of day, rates, packed outcomes), defined once in the profile and
  feature modules and compiled for the kernel from there
- its state: ``state`` (what a pipeline keeps, and how it is committed to and loaded from a
  store, in the layout of :mod:`liveprofile.store.layout`)
- runners, thin adapters around the step: ``local`` (a source into a store, batch by batch);
  the Redis Streams runner and its operations are in :mod:`liveprofile.redis`
- beside them: ``changes`` (where segment changes go), ``gc_tuning``, and ``warmup``
  (compiling the step for a config before the first real batch)
- for serving: ``exposure`` (the features of items shown to one user now, built by the step's
  compiled feature functions on one profile row, in rows ``recycled`` from request to request)
  and ``featurenames`` (their readable names)

Debugging the compiled step: with ``LIVEPROFILE_NO_JIT=1`` in the environment (read when the
engine is first imported; numba's own ``NUMBA_DISABLE_JIT=1`` works too) the kernel and its
helpers run as plain Python, with the same results to the byte, so ``pdb`` (or a ``breakpoint()``
in :mod:`liveprofile.engine.kernel`) steps through them. See :mod:`liveprofile.engine.jit`.
"""
