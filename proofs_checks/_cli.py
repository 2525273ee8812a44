"""What the claims and proofs commands share: selecting records by id from ``--only``."""

from __future__ import annotations

import argparse
from typing import Protocol, TypeVar


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


Record = TypeVar("Record", bound=_HasId)


def select_by_id(parser: argparse.ArgumentParser, records: tuple[Record, ...], only: list[str] | None,
                 what: str) -> tuple[Record, ...]:
    """The records whose id is in ``only`` (all of them when ``only`` is None), in their declared order; an unknown
    id is a usage error naming the known ones (``parser.error`` exits with status 2)."""
    if not only:
        return records
    known = {record.id for record in records}
    unknown = [i for i in only if i not in known]
    if unknown:
        parser.error(f"unknown {what} id(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return tuple(record for record in records if record.id in only)
