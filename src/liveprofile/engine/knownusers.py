"""Which ids are known users at a point of a batch, for the screen (:mod:`.screen`).

An id is known once its own events (not only an anonymous id's) made its profile, until a
``$forget`` erases it, a ``$merge`` folds it into another or it is idle past the profile TTL
(the step expires such a profile at its next event or link); a ``$merge`` makes the user merged
into known when it takes a profile that way. Commands alone make no one known.

An event sent under a linked id (a visitor who logged in, a user merged into another) is the
user's the id leads to, as the step moves it there: it makes that user known, not the id.
:class:`KnownUsers` follows the links of the state and those the batch makes or removes, in
the batch's order.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> state = Core(PipelineConfig()).new_state()
>>> state.aliases["v1"] = "u1"
>>> known = KnownUsers(state, None)
>>> known.acted(Event("e1", "v1", "view", 1.0))  # under the visitor's id: u1's event
>>> known.is_known("v1", 1.0), known.is_known("u1", 1.0)
(False, True)
>>> known.acted(Event("e2", "u2", "purchase", 2.0, anonymous_id="v1"))  # v1 logs in as u2
>>> known.owner("v1")
'u2'
"""

from __future__ import annotations

import math

from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.state import PipelineState
from liveprofile.events.schema import FORGET, MERGE, Event
from liveprofile.profile.state import Profile


class KnownUsers:
    """Who is known at a point of a batch, as the step will have left it (see the module's
    docstring); :meth:`acted` takes each event that passes, in order."""

    def __init__(self, state: PipelineState, ttl: float | None) -> None:
        self.state = state
        self.ttl = ttl
        self.at = state.checkpoint.watermark
        self.known: set[str] = set()  # known users by this batch's events
        self.visitors: set[str] = set()  # anonymous profiles made by this batch's events
        self.gone: set[str] = set()  # ids whose stored profile this batch removed
        self.last: dict[str, float] = {}  # the latest event of a profile this batch touched
        #: links this batch made or removed (None), each with when (:attr:`clock`)
        self.links: dict[str, tuple[str | None, int]] = {}
        #: profiles this batch deleted (the links to them end) or folded into another's (the
        #: links to them follow), with when
        self.ended: dict[str, int] = {}
        self.folded: dict[str, tuple[str, int]] = {}
        self.clock = 0  # events acted on

    def owner(self, user: str) -> str | None:
        """The user ``user`` is linked to now (None: not linked)."""
        if user in self.links:
            owner, at = self.links[user]
        else:
            owner, at = self.state.aliases.get(user), -1
        while owner is not None:
            folded = self.folded.get(owner)
            if folded is not None and folded[1] > at:  # a link to a folded profile follows it
                owner, at = folded
                continue
            if self.ended.get(owner, -1) > at:  # a deleted profile takes its links with it
                return None
            return owner
        return None

    def _stored(self, user: str) -> Profile | None:
        # as it is: the fields read here are never held as row bytes (no decoding)
        return None if user in self.gone else peek(self.state.profiles, user)

    def _idle(self, user: str, at: float) -> bool:
        if self.ttl is None:
            return False
        p = self._stored(user)
        last = max(self.last.get(user, -math.inf), -math.inf if p is None else p.last_ts)
        return last + self.ttl < at

    def is_known(self, user: str, ts: float) -> bool:
        """Whether ``user`` is a known user for an event at ``ts`` that passes next."""
        if self._idle(user, max(self.at, ts)):
            return False
        p = self._stored(user)
        return user in self.known or (
            user not in self.visitors and p is not None and not p.anonymous
        )

    def _has_profile(self, user: str) -> bool:
        return user in self.known or user in self.visitors or self._stored(user) is not None

    def _drop(self, user: str) -> None:
        self.known.discard(user)
        self.visitors.discard(user)
        self.last.pop(user, None)
        self.gone.add(user)

    def _end(self, user: str) -> None:
        """``user``'s profile is erased or expired, with the links to it."""
        self._drop(user)
        self.ended[user] = self.clock

    def _fold(self, anon: str, user: str) -> None:
        """``anon`` is linked to ``user``, its profile (if any) folded into the user's."""
        self._drop(anon)
        self.links[anon] = (user, self.clock)
        self.folded[anon] = (user, self.clock)

    def acted(self, e: Event) -> None:
        """Take the effect of ``e``, which passed, on who is known."""
        user, anon = e.user, e.anonymous_id
        self.at = max(self.at, e.ts)
        self.clock += 1
        if (
            anon == user
            and user in self.visitors
            and self.ttl is None
            and user not in self.links
            and user not in self.state.aliases
            and e.type != FORGET
        ):
            return  # an unlinked visitor's next event (most of a login batch's): no change
        if e.type == FORGET:  # a linked id loses its link, a user its profile and links
            self._end(user)
            self.links[user] = (None, self.clock)
            return
        ttl = self.ttl
        owner = None if ttl is None else self.owner(user)
        if owner is not None and self._has_profile(owner) and self._idle(owner, self.at):
            self._end(owner)  # idle past the TTL: expired with its links before the event
        user = self.owner(user) or user
        for who in (user, anon) if ttl is not None else ():  # idle past the TTL: expired first
            if who is not None and self._has_profile(who) and self._idle(who, self.at):
                self._end(who)
        if e.type == MERGE:
            assert anon is not None
            if anon != user and self.owner(anon) != user:
                if self._has_profile(anon) and not self._has_profile(user):
                    self.known.add(user)
                self._fold(anon, user)
            return
        if anon == user:  # a visitor's event (the usual one here: once it has a profile, a no-op)
            if user not in self.visitors and not self._has_profile(user):
                self.visitors.add(user)
        else:
            if anon is not None and self.owner(anon) != user:  # a login folds the visitor in
                self._fold(anon, user)
            self.known.add(user)
            self.visitors.discard(user)
        if ttl is not None:  # read by _idle only
            self.last[user] = max(self.last.get(user, -math.inf), e.ts)
