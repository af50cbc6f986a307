"""Forward exponential decay: order-independent decayed sums in O(1) per update.

A decayed sum ``S(T) = sum_i w_i * 2 ** (-(T - t_i) / h)`` is kept as
``s = sum_i w_i * 2 ** ((t_i - anchor) / h)`` for a fixed landmark ``anchor``, so that
``S(T) = s * 2 ** (-(T - anchor) / h)`` (Cormode, Shkapenyuk, Srivastava and Xu, "Forward decay",
ICDE 2009). Adding an event is one multiply-add whatever its time, so events that arrive out of
order give the same sum as in order. The landmark moves forward (``rebase``) before the stored
numbers could overflow.

>>> h = 10.0
>>> s = forward_weight(20.0, 0.0, h) + forward_weight(10.0, 0.0, h)
>>> decayed_value(s, at=20.0, anchor=0.0, half_life=h)
1.5
"""

from __future__ import annotations

#: rebase once an event lies this many half-lives after the landmark (2**512 is far from overflow)
REBASE_AFTER = 512.0

# The kernel calls these functions compiled by numba (``engine.rules``), the object-level code
# (merges, segment rules, serving) as they are. The kernel passes ``two`` from its parameters
# (``layout.FP_TWO``): numba turns a literal ``2.0 ** x`` into ``exp2(x)``, which rounds
# differently from Python's ``2.0 ** x`` in about one case in a thousand.


def forward_weight(t: float, anchor: float, half_life: float, two: float = 2.0) -> float:
    """The stored weight of one unit at time ``t`` relative to ``anchor``."""
    w: float = two ** ((t - anchor) / half_life)
    return w


def decay_factor(at: float, anchor: float, half_life: float, two: float = 2.0) -> float:
    """The factor that takes a sum stored relative to ``anchor`` to its value at time ``at``;
    also what stored values are multiplied by when the landmark moves to ``at``."""
    f: float = two ** (-(at - anchor) / half_life)
    return f


def decayed_value(stored: float, at: float, anchor: float, half_life: float) -> float:
    """The decayed sum at time ``at`` from its stored form."""
    return stored * decay_factor(at, anchor, half_life)


def needs_rebase(t: float, anchor: float, half_life: float) -> bool:
    """Whether the landmark must move before an event at ``t`` is added (``half_life``: the
    shortest one the landmark serves)."""
    return (t - anchor) / half_life > REBASE_AFTER


#: multiply stored values by ``rebase_factor(new_anchor, anchor, half_life)`` when the landmark
#: moves to ``new_anchor``
rebase_factor = decay_factor
