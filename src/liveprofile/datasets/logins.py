"""A shop where visitors browse anonymously and log in at their first purchase.

:func:`with_logins` turns a stream of events under user ids (e.g. the synthetic generator's)
into the stream a shop with logins sends: each user's events before their first purchase carry
only an anonymous id, the first purchase carries both ids (the identity link that folds the
visitor's profile into the user's), and later events carry the user id. The same events under
user ids give the same behaviour without the links, which is how the cost of the links is
measured (``benchmarks/identity.py``). :func:`returning_logins` is the shop whose customers come
back: every session browses anonymously and logs in at its first cart or purchase, so most
logins are into a user who already has a profile.

>>> events = [
...     {"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1.0},
...     {"event_id": "e2", "user_id": "u1", "type": "purchase", "ts": 2.0},
...     {"event_id": "e3", "user_id": "u1", "type": "view", "ts": 3.0},
... ]
>>> [(e.get("user_id"), e.get("anonymous_id")) for e in with_logins(events)]
[(None, 'visitor-u1'), ('u1', 'visitor-u1'), ('u1', None)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def with_logins(
    events: Iterable[dict[str, Any]], login: str = "purchase", prefix: str = "visitor-"
) -> Iterator[dict[str, Any]]:
    """The events with each user anonymous (``prefix`` + user id) until their first ``login``
    event, which links the two ids; see the module's docstring."""
    logged_in: set[str] = set()
    for event in events:
        user = event["user_id"]
        if user in logged_in:
            yield event
        elif event["type"] == login:
            logged_in.add(user)
            yield {**event, "anonymous_id": prefix + user}
        else:
            visitor = {k: v for k, v in event.items() if k != "user_id"}
            visitor["anonymous_id"] = prefix + user
            yield visitor


def returning_logins(
    events: Iterable[dict[str, Any]],
    login: tuple[str, ...] = ("cart", "purchase"),
    prefix: str = "visitor-",
) -> Iterator[dict[str, Any]]:
    """The events of a shop whose customers return: every session browses anonymously (its own
    anonymous id, ``prefix`` + the session of its ``event_id`` ``<session>-<n>``) until its
    first ``login`` event, which links the session's id to the user; later events of the
    session carry the user id, and a session without such an event stays anonymous. A user's
    first login folds the visitor into a new user; every later one logs into a user who already
    has a profile (:func:`returning_share` counts them).

    >>> events = [
    ...     {"event_id": "s1-0", "user_id": "u1", "type": "view", "ts": 1.0},
    ...     {"event_id": "s1-1", "user_id": "u1", "type": "cart", "ts": 2.0},
    ...     {"event_id": "s1-2", "user_id": "u1", "type": "view", "ts": 3.0},
    ...     {"event_id": "s2-0", "user_id": "u1", "type": "view", "ts": 4.0},
    ...     {"event_id": "s2-1", "user_id": "u1", "type": "purchase", "ts": 5.0},
    ...     {"event_id": "s3-0", "user_id": "u1", "type": "view", "ts": 6.0},
    ... ]
    >>> out = list(returning_logins(events))
    >>> [(e.get("user_id"), e.get("anonymous_id")) for e in out]  # doctest: +NORMALIZE_WHITESPACE
    [(None, 'visitor-s1'), ('u1', 'visitor-s1'), ('u1', None),
     (None, 'visitor-s2'), ('u1', 'visitor-s2'), (None, 'visitor-s3')]
    >>> returning_share(out)  # two logins, the second into u1's profile
    0.5
    """
    logged_in: set[str] = set()
    for event in events:
        session = prefix + str(event["event_id"]).rsplit("-", 1)[0]
        if session in logged_in:
            yield event
        elif event["type"] in login:
            logged_in.add(session)
            yield {**event, "anonymous_id": session}
        else:
            visitor = {k: v for k, v in event.items() if k != "user_id"}
            visitor["anonymous_id"] = session
            yield visitor


def returning_share(events: Iterable[dict[str, Any]]) -> float:
    """The fraction of the logins (events with both ids) into a user who already has a profile:
    a user seen under their id before, by a login or a logged-in event."""
    seen: set[Any] = set()
    logins = returning = 0
    for event in events:
        user = event.get("user_id")
        if user is None:
            continue
        if event.get("anonymous_id") is not None:
            logins += 1
            returning += user in seen
        seen.add(user)
    return returning / logins if logins else 0.0
