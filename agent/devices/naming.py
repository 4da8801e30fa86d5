"""Fuzzy, case-insensitive lookup of SharkSEM-style geometry and centering names.

SharkSEM enumerates geometries and centerings as a text map (``geom.<N>.name=<name>``); Semphony lets callers
name an entry loosely ("tilt_correction", "Tilt Correction", "tiltcorr") or by its index.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

__all__ = ["normalise_name", "parse_enum_map", "resolve_entry"]

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise_name(name: str) -> str:
    """Lower-case and drop everything but letters and digits ("Tilt Correction" -> "tiltcorrection")."""
    return _NON_ALNUM.sub("", name.lower())


def parse_enum_map(text: str, prefix: str) -> dict[int, str]:
    """Parse a SharkSEM ``EnumGeometries``/``EnumCenterings`` text map (``geom.0.name=Image Shift`` lines)."""
    entries: dict[int, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 3 or parts[0] != prefix or parts[2] != "name" or not parts[1].isdigit():
            continue
        entries[int(parts[1])] = value.strip()
    return entries


def resolve_entry(names: Sequence[str], name_or_index: str | int) -> int:
    """Return the index ``name_or_index`` designates, or raise ``LookupError`` explaining why not.

    Order of preference: an integer (or all-digit string) index; an exact normalised name; the only
    entry whose normalised name starts with or contains the query; the only close match
    (difflib ratio >= 0.75).
    """
    if isinstance(name_or_index, bool):
        raise LookupError(f"not a name or index: {name_or_index!r}")
    if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.strip().isdigit()):
        index = int(name_or_index)
        if 0 <= index < len(names):
            return index
        raise LookupError(f"index {index} out of range 0..{len(names) - 1}")
    query = normalise_name(name_or_index)
    if not query:
        raise LookupError(f"empty name {name_or_index!r}")
    normalised = [normalise_name(n) for n in names]
    if query in normalised:
        return normalised.index(query)
    for predicate in (str.startswith, str.__contains__):
        hits = [i for i, n in enumerate(normalised) if predicate(n, query)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise LookupError(f"{name_or_index!r} is ambiguous: {[names[i] for i in hits]}")
    close = difflib.get_close_matches(query, normalised, n=2, cutoff=0.75)
    if len(close) == 1:
        return normalised.index(close[0])
    raise LookupError(f"no entry matches {name_or_index!r}; known: {list(names)}")
