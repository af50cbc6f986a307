"""A shop where visitors browse anonymously and log in at their first purchase.

:func:`with_logins` turns a stream of events under user ids (e.g. the synthetic generator's)
into the stream a shop with logins sends: each user's events before their first purchase carry
only an anonymous id, the first purchase carries both ids (the identity link that folds the
visitor's profile into the user's), and later events carry the user id. The same events under
user ids give the same behaviour without the links, which is how the cost of the links is
measured (``benchmarks/identity.py``).

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
