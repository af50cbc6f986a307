"""MovieLens ratings as ``rate`` events: ``ratings.csv`` with genres from ``movies.csv`` as tags.

>>> MAPPING["value"], MAPPING["event_id"]
('rating', '{userId}:{movieId}')
"""

from __future__ import annotations

import os
from pathlib import Path

from liveprofile.events.sources import CsvSource, read_item_tags

MAPPING = {
    "user_id": "userId",
    "item_id": "movieId",
    "value": "rating",
    "ts": "timestamp",
    "event_id": "{userId}:{movieId}",
}


def movielens_source(ratings: str | os.PathLike[str]) -> CsvSource:
    """A source over a MovieLens ``ratings.csv``; genres come from ``movies.csv`` beside it."""
    movies = Path(ratings).with_name("movies.csv")
    tags = read_item_tags(movies, "movieId", "genres") if movies.exists() else {}
    return CsvSource(ratings, MAPPING, constants={"type": "rate"}, item_tags=tags)
