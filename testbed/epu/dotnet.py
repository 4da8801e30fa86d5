"""Formatting values the way .NET's ``DataContractSerializer`` writes them in EPU files.

EPU files are single-line XML with no declaration; numbers use the round-trip ("R") form with an upper-case
exponent (``-4.9194160965271294E-05``, ``1E-06``, ``3.9923136094518787E+21``), integral doubles have no
decimal
point (``0``, ``300000``), booleans are ``true``/``false`` and timestamps carry seven fractional digits with
either ``Z`` or an offset. These helpers are shared by every template in :mod:`testbed.epu.templates`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape

# Namespace URIs (epu-format.md section 4.3). Prefixes are chosen per element by the templates, as EPU does.
DC = "http://schemas.datacontract.org/2004/07/"
NS_EPU = DC + "Applications.Epu.Persistence"
NS_T = DC + "Fei.Applications.Common.Types"
NS_SO = DC + "Fei.SharedObjects"
NS_GA = DC + "Applications.SciencesAppsShared.GridAtlas.Persistence"
NS_GAD = DC + "Applications.SciencesAppsShared.GridAtlas.Datamodel"
NS_SCR = DC + "Applications.SciencesAppsShared.GridAtlas.Persistence.Screening"
NS_AA = DC + "Applications.SciencesAppsShared.Types.AtlasAlignment"
NS_SAT = DC + "Applications.SciencesAppsShared.Types"
NS_GEN = DC + "System.Collections.Generic"
NS_DRAW = DC + "System.Drawing"
NS_MEDIA = DC + "System.Windows.Media"
NS_SYS = DC + "System"
NS_FT = DC + "Fei.Types"
NS_FCT = DC + "Fei.Common.Types"
NS_SVC = DC + "Fei.Applications.Common.Services"
NS_OMP = DC + "Fei.Applications.Common.Omp.Interface"
NS_DMP = DC + "Applications.SciencesAppsShared.DMP.BusinessLogic.Persistence"
NS_ARR = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
NS_Z = "http://schemas.microsoft.com/2003/10/Serialization/"
NS_I = "http://www.w3.org/2001/XMLSchema-instance"
NS_XS = "http://www.w3.org/2001/XMLSchema"

ROOT_XMLNS = f'xmlns:i="{NS_I}" xmlns:z="{NS_Z}"'
"""The two namespace declarations every ``.dm`` root carries after its default namespace."""

MSCORLIB = "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"
INT32 = f"System.Int32, {MSCORLIB}"
STRING = f"System.String, {MSCORLIB}"
OBJECT = f"System.Object, {MSCORLIB}"


def num(value: float) -> str:
    """A double in .NET round-trip form: integral values without a point, upper-case exponent."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(float(value))
    if "e" in text:
        mantissa, _, exponent = text.partition("e")
        sign = exponent[0] if exponent[0] in "+-" else "+"
        digits = exponent.lstrip("+-").rjust(2, "0")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}E{sign}{digits}"
    return text


def boolean(value: bool) -> str:
    """``true`` / ``false``."""
    return "true" if value else "false"


def text(value: str) -> str:
    """Element text with XML special characters escaped."""
    return escape(value)


def timestamp(value: datetime, *, utc: bool = False) -> str:
    """ISO-8601 with seven fractional digits (.NET ticks), ``Z`` when ``utc`` else the value's own offset.

    The seventh digit is derived from the microseconds so that it is deterministic and non-trivial, as in real
    files; a parser that truncates to microseconds gets ``value`` back exactly.
    """
    if value.tzinfo is None:
        raise ValueError("EPU timestamps are written with a zone; got a naive datetime")
    tick = (value.microsecond * 7 + 3) % 10
    if utc:
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}{tick}Z"
    offset = value.strftime("%z")
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}{tick}{offset[:3]}:{offset[3:]}"


def name_timestamp(value: datetime) -> str:
    """The ``yyyymmdd_hhmmss`` local time used in EPU file names (no zone)."""
    return value.strftime("%Y%m%d_%H%M%S")


_Z_ATTR = re.compile(r'z:(Id|Ref)="(\d+)"')


def renumber_zids(xml: str) -> str:
    """Renumber ``z:Id``/``z:Ref`` so that ids increase in document order, as the serializer writes them.

    Templates allocate ids while building nested strings, which is not always document order; this pass fixes
    the numbering and checks that every ``z:Ref`` follows its target (a streaming parser relies on that).
    """
    mapping: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        kind, old = match.group(1), match.group(2)
        if kind == "Id":
            new = str(len(mapping) + 1)
            mapping[old] = new
            return f'z:Id="{new}"'
        if old not in mapping:
            raise ValueError(f"z:Ref={old} precedes its z:Id in a rendered template")
        return f'z:Ref="{mapping[old]}"'

    return _Z_ATTR.sub(replace, xml)


class ZIds:
    """Allocator of ``z:Id`` values for one file (ids are scoped to a file and increase in document order)."""

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def __call__(self) -> int:
        """The next id."""
        value = self._next
        self._next += 1
        return value


__all__ = [
    "NS_AA",
    "NS_ARR",
    "NS_DMP",
    "NS_DRAW",
    "NS_EPU",
    "NS_FCT",
    "NS_FT",
    "NS_GA",
    "NS_GAD",
    "NS_GEN",
    "NS_I",
    "NS_MEDIA",
    "NS_OMP",
    "NS_SAT",
    "NS_SCR",
    "NS_SO",
    "NS_SVC",
    "NS_SYS",
    "NS_T",
    "NS_XS",
    "NS_Z",
    "ZIds",
    "boolean",
    "name_timestamp",
    "num",
    "renumber_zids",
    "text",
    "timestamp",
]
