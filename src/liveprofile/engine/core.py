"""The step a runner calls.

:class:`Core` is the processing step of a pipeline, configured once and shared by every runner.
Every batch takes :class:`~liveprofile.engine.compiled.CompiledStep`: the kernel
(:mod:`liveprofile.engine.kernel`) with the Python lifecycle at its stops (identity links,
erasures, expiry) and the Python work around it (:class:`~liveprofile.engine.step.Step`). The
kernel is compiled with numba; under ``LIVEPROFILE_NO_JIT=1`` the same code runs as plain Python
(:mod:`liveprofile.engine.jit`), with the same results to the byte.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig())
>>> state = core.new_state()
>>> out = core.step(state, [Event("e1", "u1", "rate", 0.0, item_id="m1", value=4.5),
...                         Event("e1", "u1", "rate", 0.0, item_id="m1", value=4.5)])
>>> out.applied, out.duplicates, sorted(out.users), state.tasks["like"].metrics.n
(1, 1, ['u1'], 1)
"""

from __future__ import annotations

from collections.abc import Sequence

from liveprofile.config import PipelineConfig
from liveprofile.engine.compiled import CompiledStep
from liveprofile.engine.lifecycle import StepResult
from liveprofile.engine.state import PipelineState
from liveprofile.engine.step import Step
from liveprofile.events.schema import Event

__all__ = ["Core", "StepResult"]


class Core(Step):
    """The processing step of a pipeline; see the module's docstring."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__(config)
        #: the step over arrays, which owns the state's open pending examples once it ran
        self.compiled = CompiledStep(self)

    def alias_keys(self, state: PipelineState, events: Sequence[Event]) -> set[str]:
        keys = super().alias_keys(state, events)
        compiled = self.compiled
        if compiled.owner is state and state.checkpoint.links:
            # the pending examples this batch closes are in the compiled step's arrays
            keys |= compiled.due_keys(state, self.horizon(state, events))[0]
        return keys

    def required_keys(
        self, state: PipelineState, events: Sequence[Event]
    ) -> tuple[set[str], set[str]]:
        compiled = self.compiled
        if compiled.owner is not state:  # the open examples are still the state's tasks'
            return super().required_keys(state, events)
        users, items = self.batch_keys(state, events)
        due_users, due_items = compiled.due_keys(state, self.horizon(state, events))
        items |= due_items
        items -= compiled.held_items  # current in its arrays
        aliases = state.aliases
        return users | due_users | {aliases.get(u, u) for u in due_users}, items

    def step(self, state: PipelineState, events: Sequence[Event]) -> StepResult:
        """Apply a batch of validated events to ``state``; return what changed."""
        return self.compiled.step(state, events)
