"""The step a runner calls: compiled unless the pipeline asks for the Python step.

:class:`Core` is the processing step of a pipeline, configured once and shared by every runner.
With ``run.engine = "compiled"`` (the default) every batch takes
:class:`~liveprofile.engine.compiled.CompiledStep` (numba, see :mod:`liveprofile.engine.kernel`),
identity links, erasures, expiry, anomaly scores and tasks that learn a value included;
``"python"`` takes the Python step (:class:`~liveprofile.engine.step.PythonStep`, the readable
reference). Both give the same state, to the byte.

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
from liveprofile.engine.step import PythonStep
from liveprofile.events.schema import Event

__all__ = ["Core", "StepResult"]


class Core(PythonStep):
    """The processing step of a pipeline; see the module's docstring."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__(config)
        #: the compiled path, unless the pipeline asks for the Python step
        self.compiled: CompiledStep | None = None
        if config.run.engine == "compiled":
            self.compiled = CompiledStep(self)

    def alias_keys(self, state: PipelineState, events: Sequence[Event]) -> set[str]:
        keys = super().alias_keys(state, events)
        compiled = self.compiled
        if compiled is not None and compiled.owner is state and state.checkpoint.links:
            # the pending examples this batch closes are in the compiled step's arrays
            keys |= compiled.due_keys(state, self.horizon(state, events))[0]
        return keys

    def required_keys(
        self, state: PipelineState, events: Sequence[Event]
    ) -> tuple[set[str], set[str]]:
        compiled = self.compiled
        if compiled is None or compiled.owner is not state:
            return super().required_keys(state, events)
        users, items = self.batch_keys(state, events)
        due_users, due_items = compiled.due_keys(state, self.horizon(state, events))
        items |= due_items
        items -= compiled.held_items  # current in its arrays
        aliases = state.aliases
        return users | due_users | {aliases.get(u, u) for u in due_users}, items

    def step(self, state: PipelineState, events: Sequence[Event]) -> StepResult:
        """Apply a batch of validated events to ``state``; return what changed."""
        compiled = self.compiled
        if compiled is not None:
            return compiled.step(state, events)
        return self.python_step(state, events)

    def python_step(self, state: PipelineState, events: Sequence[Event]) -> StepResult:
        """:meth:`step` in Python: the reference the compiled path is tested against."""
        return super().step(state, events)
