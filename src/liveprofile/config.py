"""The pipeline configuration: a TOML file, every field optional.

>>> cfg = PipelineConfig.from_toml('''
... [profile]
... interests_half_life = "14d"
... [[tasks]]
... name = "like"
... on = ["rate"]
... label = { kind = "value", threshold = 4.0 }
... learner = { kind = "ftrl", alpha = 0.1 }
... ''')
>>> cfg.profile.interests_half_life_s, [t.name for t in cfg.tasks], cfg.tasks[0].learner.params
(1209600.0, ['like'], {'alpha': 0.1})
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from liveprofile.durations import parse_duration
from liveprofile.errors import ConfigError

Duration = str | float


class ProfileConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How profiles are kept: decay half-lives, interest weights, size bounds."""

    counters_half_life: Duration = "7d"
    interests_half_life: Duration = "30d"
    top_k: int = 16
    #: keys (e.g. categories) per user whose outcomes of delayed tasks are counted
    outcome_keys: int = 64
    #: which interest keys to track; empty means every category and tag seen.
    track: list[str] = []
    #: interest weight per event type; types not listed weigh ``default_weight``.
    weights: dict[str, float] = msgspec.field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}
    )
    default_weight: float = 1.0
    #: event types whose ``value`` counts as money spent (monetary, RFM).
    monetary_types: list[str] = msgspec.field(default_factory=lambda: ["purchase"])
    #: items, and apart from them categories, per user whose behaviour is kept (decayed counts
    #: of ``behaviour_types``, last interaction, converted), the most recent ones; 0: none
    behaviour_keys: int = 32
    #: the event types counted per item and category (see ``liveprofile.profile.behaviour``)
    behaviour_types: list[str] = msgspec.field(
        default_factory=lambda: ["view", "click", "cart", "purchase"]
    )
    #: also keep, per item and category, the decayed sum of the counted events' values (the
    #: features then read their mean value there: a user's ratings of a genre, say)
    behaviour_value: bool = False

    def __post_init__(self) -> None:
        if self.behaviour_keys < 0:
            raise ConfigError(
                f"profile.behaviour_keys must be 0 or more, got {self.behaviour_keys}"
            )
        if len(set(self.behaviour_types)) != len(self.behaviour_types):
            raise ConfigError(f"profile.behaviour_types repeats a type: {self.behaviour_types}")
        if self.top_k < 1:
            raise ConfigError(f"profile.top_k must be at least 1, got {self.top_k}")
        for half_life in (self.counters_half_life_s, self.interests_half_life_s):
            if half_life <= 0:
                raise ConfigError("profile half-lives must be positive, e.g. '7d'")

    @property
    def counters_half_life_s(self) -> float:
        return parse_duration(self.counters_half_life)

    @property
    def interests_half_life_s(self) -> float:
        return parse_duration(self.interests_half_life)


class LearnerConfig(msgspec.Struct, forbid_unknown_fields=False, frozen=True):
    """Which learner a task uses and its hyperparameters (every other key is a parameter).

    ``kind`` is ``ftrl``, ``ogd``, ``tuned`` (a champion and challengers: FTRL/OGD settings or
    River classifiers, see :mod:`liveprofile.learn.tuned`), ``hoeffding`` or ``river`` (with
    ``model`` naming any River classifier, e.g. ``"linear_model.LogisticRegression"``).
    """

    kind: str = "ftrl"
    model: str | None = None
    params: dict[str, Any] = {}


class LabelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How a training example's label is derived.

    - ``value``: positive when the event's value is at least ``threshold`` (e.g. rating >= 4);
    - ``type``: positive when the event's type is one of ``positive`` (e.g. click among views);
    - ``delayed``: the event is an exposure; positive when a ``conversion`` event of the same user
      and the same ``key`` (``item`` or ``category``) follows within ``window`` in event time,
      negative when the window closes. With ``key = "user"`` any conversion of the same user
      counts (repeat purchase; churn is its negation). Every exposure opens its own example,
      and a conversion labels every open example of its user and key; ``open_per_key`` bounds
      how many of them may await a conversion per (user, key) at once (an exposure beyond it
      opens nothing; ``1`` keeps one open example per (user, key): fewer examples and less
      memory, but a repeated view is no evidence). With ``target = "value"`` the example is a
      regression one: its target is the sum of the conversions' ``value`` within the window
      (e.g. spend in the next 30 days), learned by a regressor (``learner.kind = "linreg"``, or
      ``river`` with a River regressor) and evaluated by MAE and RMSE.

    ``feedback`` says when a delayed example is learned: ``"window"`` (the default) once its
    window closes, with its true label; ``"fnc"`` (fake-negative calibration, Ktena et al. 2019)
    at once as a negative, and again as a positive when its conversion comes, the served
    prediction corrected for those fake negatives; ``"fnw"`` (fake-negative weighting) the same
    stream with each learned example weighted by the learner, the prediction served as it is;
    ``"wait"`` (elapsed-time sampling, as ES-DFM, without its importance weights) ``wait`` after
    the exposure with the label known then, and again as a positive when a conversion comes later
    (see :mod:`liveprofile.learn.delayed`).
    """

    kind: Literal["value", "type", "delayed"]
    threshold: float = 4.0
    positive: list[str] = []
    conversion: list[str] = []
    key: Literal["item", "category", "user"] = "item"
    window: Duration = "1d"
    #: most examples per (user, key) awaiting a conversion at once (delayed labels)
    open_per_key: int = 32
    #: what a delayed example learns: whether it converted, or the sum of the conversions' value
    target: Literal["converted", "value"] = "converted"
    #: when delayed examples are learned: at the window's close, or at once with a correction
    feedback: Literal["window", "fnc", "fnw", "wait"] = "window"
    #: ``feedback = "wait"``: how long after its exposure an example is learned (< ``window``)
    wait: Duration = "1h"

    def __post_init__(self) -> None:
        if not 1 <= self.open_per_key <= 1_000_000:
            raise ConfigError(
                f"label.open_per_key must be within 1..1000000, got {self.open_per_key}"
            )

    @property
    def window_s(self) -> float:
        return parse_duration(self.window)

    @property
    def wait_s(self) -> float:
        return parse_duration(self.wait)


class TaskConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A learning task: which events give examples, how they are labelled, which learner."""

    name: str
    on: list[str]
    label: LabelConfig
    learner: LearnerConfig = LearnerConfig()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"task name {self.name!r} must be an identifier, e.g. 'purchase'")
        if not self.on:
            raise ConfigError(f"task {self.name!r}: 'on' must list at least one event type")
        if self.label.kind == "delayed" and not self.label.conversion:
            raise ConfigError(f"task {self.name!r}: a delayed label needs 'conversion' types")
        if self.label.kind == "type" and not self.label.positive:
            raise ConfigError(f"task {self.name!r}: a 'type' label needs 'positive' types")
        if self.label.kind == "delayed" and self.label.window_s <= 0:
            raise ConfigError(f"task {self.name!r}: the window must be positive")
        if self.label.feedback != "window" and (
            self.label.kind != "delayed" or self.label.target == "value"
        ):
            raise ConfigError(
                f"task {self.name!r}: feedback = {self.label.feedback!r} needs a delayed label "
                "that learns whether a conversion came (target = 'converted')"
            )
        if self.label.feedback == "wait" and not 0 < self.label.wait_s < self.label.window_s:
            raise ConfigError(
                f"task {self.name!r}: feedback = 'wait' needs 0 < wait < window, got "
                f"wait = {self.label.wait!r}, window = {self.label.window!r}"
            )
        learner = self.learner
        members = [learner.params.get("champion") or {}, *learner.params.get("challengers", [])]
        river_member = learner.kind == "tuned" and any(
            isinstance(m, dict) and m.get("kind", "ftrl") not in ("ftrl", "ogd") for m in members
        )  # a River member learns unweighted
        if self.label.feedback == "fnw" and (
            learner.kind not in ("ftrl", "ogd", "tuned") or river_member
        ):
            raise ConfigError(
                f"task {self.name!r}: feedback = 'fnw' weighs its examples: use a learner that "
                "can (kind = 'ftrl', 'ogd' or 'tuned' of FTRL and OGD members), or "
                "feedback = 'fnc'"
            )
        if self.label.target == "value":
            if self.label.kind != "delayed":
                raise ConfigError(f"task {self.name!r}: target = 'value' needs a delayed label")
            if self.learner.kind not in ("linreg", "river"):
                raise ConfigError(
                    f"task {self.name!r} learns a value: use a regressor, learner = "
                    "{ kind = 'linreg' } or { kind = 'river', model = "
                    "'linear_model.LinearRegression' }"
                )

    @property
    def regression(self) -> bool:
        """Whether the task learns a number (the value of its conversions) rather than a label."""
        return self.label.target == "value"


class FeatureConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Hashed feature space and which feature groups are built."""

    bits: int = 20
    crosses: bool = True
    time_of_day: bool = True
    #: the user's behaviour on the event's item and category (``profile.behaviour_keys``)
    behaviour: bool = True

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 28:
            raise ConfigError(f"features.bits must be within 8..28, got {self.bits}")


class RunConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Batching, de-duplication and reporting."""

    #: events per batch; a batch is the unit of commit (profiles + models + offset).
    batch_size: int = 20_000
    #: how many most recent event ids are remembered for de-duplication.
    dedup_window: int = 2_000_000
    #: width of the event-time windows of the prequential metrics.
    metrics_window: Duration = "7d"
    #: how often (in event time) current segment members are re-checked against rules that
    #: change with time alone, such as ``days_since_last_purchase < 14``.
    segment_sweep: Duration = "1d"
    #: users inactive for longer than this (in event time) expire: profile, segment
    #: memberships and identity links are deleted. Empty means never. An idle user's next
    #: event (or identity link) finds the profile expired; otherwise it is deleted at the end
    #: of the first batch more than this past the end of the day of the user's last event.
    profile_ttl: Duration = ""
    #: the step's engine: "compiled", the only one (see ``liveprofile.engine.compiled``); to
    #: run it uncompiled, for a debugger, set ``LIVEPROFILE_NO_JIT=1`` in the environment.
    engine: str = "compiled"
    #: profiles kept decoded in memory between batches, the most recently updated ones; the
    #: others wait as their stored bytes (a few hundred bytes each instead of a few KB).
    hot_profiles: int = 10_000
    #: how long a streaming worker (Kafka) waits for a batch to fill before committing what it
    #: has: batches close at ``batch_size`` events or after this delay, whichever comes first.
    max_batch_delay: Duration = "200ms"
    #: most profiles kept as their committed bytes between batches, the most recently updated
    #: ones (the others are read from the store again when needed); 0 keeps every one
    resting_profiles: int = 0
    #: a directory: every batch writes the examples its models learned there as Parquet, with
    #: the features as of the exposure (see ``liveprofile.learn.examples``); empty: none
    training_log: str = ""
    #: Kafka workers and the Flink job train one model per task, shared by every partition
    #: and worker (each batch merges its sparse changes into it); false keeps one model per
    #: partition, trained on that partition's events alone
    shared_model: bool = True
    #: with a shared model, a partition whose watermark is more than this ahead of the slowest
    #: partition with events left waits for it, so the model learns the topic in about event
    #: time order (one partition far ahead would teach it the others' future); empty: no wait
    partition_skew: Duration = "1h"
    #: with a shared model and ``partition_skew``, how far past another partition's committed
    #: watermark its batch being applied may count for that wait: a batch misses the learning
    #: of the other workers' batches in flight, so this bounds the event time it misses (a
    #: replay's batch of 5,000 spans days); empty: the whole batch in flight counts
    model_staleness: Duration = "12h"

    def __post_init__(self) -> None:
        if self.max_batch_delay_s <= 0:
            raise ConfigError("run.max_batch_delay must be positive, e.g. '200ms'")
        if self.engine == "python":
            raise ConfigError(
                "run.engine = 'python' is gone: the step is written once and runs compiled; "
                "remove the key, or set LIVEPROFILE_NO_JIT=1 in the environment to run the "
                "same step uncompiled (for a debugger)"
            )
        if self.engine != "compiled":
            raise ConfigError(f"run.engine must be 'compiled', not {self.engine!r}")
        if (
            self.batch_size < 1
            or self.dedup_window < 0
            or self.hot_profiles < 0
            or self.resting_profiles < 0
        ):
            raise ConfigError(
                "run.batch_size must be >= 1; run.dedup_window, run.hot_profiles and "
                "run.resting_profiles >= 0"
            )
        if self.segment_sweep_s <= 0:
            raise ConfigError("run.segment_sweep must be positive, e.g. '1d'")
        if self.profile_ttl and not self.profile_ttl_s:
            raise ConfigError("run.profile_ttl must be positive (e.g. '365d') or empty for never")

    @property
    def metrics_window_s(self) -> float:
        return parse_duration(self.metrics_window)

    @property
    def segment_sweep_s(self) -> float:
        return parse_duration(self.segment_sweep)

    @property
    def max_batch_delay_s(self) -> float:
        return parse_duration(self.max_batch_delay)

    @property
    def profile_ttl_s(self) -> float | None:
        return parse_duration(self.profile_ttl) if self.profile_ttl else None

    @property
    def partition_skew_s(self) -> float | None:
        return parse_duration(self.partition_skew) if self.partition_skew else None

    @property
    def model_staleness_s(self) -> float | None:
        return parse_duration(self.model_staleness) if self.model_staleness else None


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What an event must satisfy, beyond its schema, before it reaches the core.

    An event outside these bounds goes to the dead-letter sink with the reason and never moves
    the watermark (see :mod:`liveprofile.engine.screen`).
    """

    #: allowed future skew: an event later than the watermark (or the runner's clock, whichever
    #: is later) by more than this is dead-lettered.
    max_future: Duration = "1d"
    #: allowed lateness: an event earlier than the watermark by more than this is dead-lettered.
    #: Empty means no bound (decayed sums do not depend on order, so late events are exact).
    allowed_lateness: Duration = ""
    #: largest magnitude of ``value``; purchases may be negative (refunds).
    max_value: float = 1e9

    def __post_init__(self) -> None:
        if not self.max_future_s > 0:
            raise ConfigError("events.max_future must be positive, e.g. '1d'")
        if not 0 < self.max_value <= 1e15:
            raise ConfigError(f"events.max_value must be within (0, 1e15], got {self.max_value}")

    @property
    def max_future_s(self) -> float:
        return parse_duration(self.max_future)

    @property
    def allowed_lateness_s(self) -> float | None:
        return parse_duration(self.allowed_lateness) if self.allowed_lateness != "" else None


class RiskConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Risk signals kept per user: recent events, velocity counts and an anomaly score.

    Velocity counts are taken over event-time windows ending at the user's last event and
    saturate at ``cap`` (see :mod:`liveprofile.profile.risk`). The anomaly detector (River's
    HalfSpaceTrees, its trees run compiled) is off unless ``anomaly = true``: it adds about a fifth
    to the CPU of a replay (``benchmarks/anomaly.py``).
    """

    #: how many of the user's most recent events the profile keeps (0 keeps none)
    recent: int = 10
    #: keep the velocity counts (about 2 µs of an event's CPU on the Kafka path, see
    #: ``benchmarks/kafka_apply.py --breakdown``); without them every ``velocity.*`` reads 0
    velocity: bool = True
    #: window of ``velocity.events_per_min``
    events_window: Duration = "1m"
    #: window of ``velocity.purchases_per_hour`` (purchases are the profile's monetary_types)
    purchases_window: Duration = "1h"
    #: window of ``velocity.distinct_items_10m``
    items_window: Duration = "10m"
    #: largest count each velocity feature reports; it bounds the profile's size
    cap: int = 32
    #: score every event of ``anomaly_types`` (every type when empty) with an online detector
    anomaly: bool = False
    anomaly_types: list[str] = []
    trees: int = 10
    height: int = 8
    #: events per reference window of the detector (its masses are those of the last window)
    window_size: int = 250
    seed: int = 42

    def __post_init__(self) -> None:
        if self.recent < 0 or not 1 <= self.cap <= 1000:
            raise ConfigError("risk.recent must be >= 0 and risk.cap within 1..1000")
        for window in (self.events_window_s, self.purchases_window_s, self.items_window_s):
            if window <= 0:
                raise ConfigError("risk windows must be positive, e.g. '1m'")
        if self.trees < 1 or not 1 <= self.height <= 16 or self.window_size < 1:
            raise ConfigError("risk.trees and risk.window_size must be >= 1, risk.height 1..16")

    @property
    def events_window_s(self) -> float:
        return parse_duration(self.events_window)

    @property
    def purchases_window_s(self) -> float:
        return parse_duration(self.purchases_window)

    @property
    def items_window_s(self) -> float:
        return parse_duration(self.items_window)


class RankerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Learning the recommendations' ranker in the pipeline, from what users bought next
    (see :mod:`liveprofile.serving.ranktrain`)."""

    #: event time between the pipeline's ranker rounds, e.g. "7d"; "0s" (the default) never
    #: learns in the pipeline: a round ranks each kept user's candidates as a request does
    #: (about 0.1-0.2 s per user), a cost a long stream pays little for and a short replay much
    every: Duration = "0s"
    #: users whose candidates a round keeps (of those active since the last round)
    users: int = 50
    #: event types that count as buying the event's item
    kinds: list[str] = msgspec.field(default_factory=lambda: ["purchase"])

    def __post_init__(self) -> None:
        if self.users < 1 or self.every_s < 0 or not self.kinds:
            raise ConfigError("ranker.users must be >= 1, ranker.every >= 0, ranker.kinds set")

    @property
    def every_s(self) -> float:
        return parse_duration(self.every)


def default_tasks() -> list[TaskConfig]:
    """Tasks that make sense for e-commerce, ratings and grocery data without a config file."""
    return [
        TaskConfig(
            name="like",
            on=["rate"],
            label=LabelConfig(kind="value", threshold=4.0),
        ),
        TaskConfig(
            name="convert",
            on=["view"],
            label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
        ),
        TaskConfig(
            name="repurchase",
            on=["purchase"],
            label=LabelConfig(
                kind="delayed", conversion=["purchase"], key="category", window="14d"
            ),
        ),
    ]


class PipelineConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything a pipeline needs; every section has defaults."""

    profile: ProfileConfig = ProfileConfig()
    features: FeatureConfig = FeatureConfig()
    run: RunConfig = RunConfig()
    events: EventsConfig = EventsConfig()
    tasks: list[TaskConfig] = msgspec.field(default_factory=default_tasks)
    #: computed traits: name -> expression over profile fields (see ``liveprofile.profile.traits``).
    traits: dict[str, str] = {}
    #: segments: name -> rule over profile fields (see ``liveprofile.profile.segments``).
    segments: dict[str, str] = {}
    #: per-user risk signals (see ``liveprofile.profile.risk``)
    risk: RiskConfig = RiskConfig()
    #: the recommendations' ranker, learned in the pipeline
    ranker: RankerConfig = RankerConfig()

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be unique, got {names}")

    @classmethod
    def from_toml(cls, text: str) -> PipelineConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config is not valid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        for task in data.get("tasks", []):
            learner = task.get("learner")
            if isinstance(learner, dict):
                known = {"kind", "model", "params"}
                extra = {k: v for k, v in learner.items() if k not in known}
                task["learner"] = {
                    **{k: v for k, v in learner.items() if k in known},
                    "params": {**learner.get("params", {}), **extra},
                }
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid config: {exc}") from None

    @classmethod
    def load(cls, path: str | Path | None) -> PipelineConfig:
        """Read a TOML file, or return the defaults when ``path`` is None."""
        if path is None:
            return cls()
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        return cls.from_toml(text)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]
