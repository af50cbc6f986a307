"""A linked id's user idle past the TTL, expired at the id's event on the compiled path.

The events of a linked id (a visitor who logged in, a user merged into another) run under the
user it leads to (:func:`liveprofile.engine.visitors.as_users`). When that user is idle past
``run.profile_ttl`` at such an event, it expires first, with every link to it
(``Lifecycle._expire_owner``), and the event stays the id's own. :func:`expire_owner` does the
same at a stop of :class:`~liveprofile.engine.links.Stops`: it writes the user's row back, lets
the lifecycle delete the profile, and points the event and the id's later ones back at the id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveprofile.engine import layout as L

if TYPE_CHECKING:
    from liveprofile.engine.links import Stops


def expire_owner(stops: Stops, e: int, user: str, ttl: float) -> None:
    """At event ``e`` of ``user``: expire the user ``user`` is linked to if it is idle past
    ``ttl`` as of the watermark (the rows hold its last event time)."""
    state = stops.state
    owner = state.aliases.get(user)
    if owner is None:
        return
    r = stops.row_of.get(owner, -1)
    U, at = stops.U, float(stops.params.fp[L.FP_WATERMARK])
    if r < 0 or not U.pi[r, L.P_EXISTS] or U.pf[r, L.P_LAST] + ttl >= at:
        return
    base, out, before = stops.base, stops.out, stops.before

    def expire() -> None:
        base._expire_owner(state, user, at, out, before)

    stops._change(e, [owner], expire)
    if user not in state.aliases:  # the event too is the id's own now
        stops._follow(user, e - 1)
