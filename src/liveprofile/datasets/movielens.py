"""MovieLens ratings as ``rate`` events: ``ratings.csv`` with genres from ``movies.csv`` as tags.

With ``first_genre_category=True`` a movie's first genre is its category and the others its
tags, so an event touches the same topics (``Event.topics``: category, then tags) and a user's
behaviour per category (``profile.behaviour``) has a key to gather on: a user rates a movie once,
but rates many of a genre.

>>> MAPPING["value"], MAPPING["event_id"]
('rating', '{userId}:{movieId}')
"""

from __future__ import annotations

import os
from pathlib import Path

from liveprofile.errors import SourceError
from liveprofile.events.sources import CsvSource, read_item_tags

#: where MovieLens is downloaded from (``ml-latest-small`` is the small one)
DOWNLOAD = "https://grouplens.org/datasets/movielens/"

MAPPING = {
    "user_id": "userId",
    "item_id": "movieId",
    "value": "rating",
    "ts": "timestamp",
    "event_id": "{userId}:{movieId}",
}


class _FirstGenreSource(CsvSource):
    """A :class:`CsvSource` whose events' first tag is their category instead."""

    def _fields(self, row: dict[str, str], number: int) -> dict[str, object]:
        fields = super()._fields(row, number)
        tags = fields.get("tags")
        if isinstance(tags, list) and tags and "category" not in fields:
            fields["category"], fields["tags"] = tags[0], tags[1:]
        return fields


def movielens_source(
    ratings: str | os.PathLike[str], *, first_genre_category: bool = False
) -> CsvSource:
    """A source over a MovieLens ``ratings.csv``; genres come from ``movies.csv`` beside it
    (the first one as the category with ``first_genre_category``); a :class:`SourceError`
    saying where MovieLens comes from if there is no such file."""
    if not Path(ratings).is_file():
        raise SourceError(
            f"no MovieLens ratings at {ratings}: pass the ratings.csv of a MovieLens download "
            f"(such as ml-latest-small, from {DOWNLOAD}), with its movies.csv beside it"
        )
    movies = Path(ratings).with_name("movies.csv")
    tags = read_item_tags(movies, "movieId", "genres") if movies.exists() else {}
    kind = _FirstGenreSource if first_genre_category else CsvSource
    return kind(ratings, MAPPING, constants={"type": "rate"}, item_tags=tags)
