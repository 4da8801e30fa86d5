"""Building blocks shared by every EPU file template: assembly and type names, and the small XML helpers.

``.dm`` renderers are marked with :func:`dm_renderer` (``z:Id`` numbering in document order); the helpers write
common-types ids, points, stage positions, ``Dictionary`` heads and ``System.Version`` elements.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec

from testbed.epu.dotnet import INT32, NS_SYS, NS_T, STRING, ZIds, num, renumber_zids
from testbed.epu.plan import EPU_VERSION, GRIDATLAS_VERSION, Stage

EPU_ASSEMBLY = f"Applications.Epu.Persistence, Version={EPU_VERSION}, Culture=neutral, PublicKeyToken=null"
GA_ASSEMBLY = (
    f"Applications.SciencesAppsShared.GridAtlas.Persistence, Version={GRIDATLAS_VERSION}, Culture=neutral, "
    "PublicKeyToken=null"
)
DMP_ASSEMBLY = (
    f"Applications.SciencesAppsShared.DMP.BusinessLogic, Version={GRIDATLAS_VERSION}, Culture=neutral, "
    "PublicKeyToken=null"
)
INT_COMPARER = f"System.Collections.Generic.GenericEqualityComparer`1[[{INT32}]]"
STRING_COMPARER = f"System.Collections.Generic.GenericEqualityComparer`1[[{STRING}]]"
GS_PAIR = "KeyValuePairOfintSerializedReferenceOfGridSquareXml_PsqDC3X0m6koiAE_P"
TARGET_PAIR = "KeyValuePairOfintTargetLocationXmlBpEWF4JT"
PARTICLE_PAIR = "KeyValuePairOfintParticleAcquisitionDataXmlBpEWF4JT"
AREA_PAIR = "KeyValuePairOfintDataAcquisitionAreaXmlBpEWF4JT"
NODE_PAIR = "KeyValuePairOfintNodeXml30oatNZW"
SAMPLE_PAIR = "KeyValuePairOfintSerializedReferenceOfSampleXmlw6cLULmsm6koiAE_P"
PRESET_PAIR = "KeyValuePairOfExperimentSettingsIdMicroscopeSettingsCG2rZ1D8"
PRESET_KEYS = (
    "Atlas",
    "GridSquare",
    "Hole",
    "Acquisition",
    "AutoFocus",
    "DriftMeasurement",
    "ZeroLoss",
    "ThonRing",
)

_T_ID = f'<Id xmlns="{NS_T}">'
_P = ParamSpec("_P")


def dm_renderer(render: Callable[_P, str]) -> Callable[_P, str]:
    """Mark a ``.dm`` renderer: its output gets ``z:Id`` numbering in document order."""

    @wraps(render)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> str:
        return renumber_zids(render(*args, **kwargs))

    return wrapper


def id_xml(value: int) -> str:
    """``<Id>`` in the common-types namespace, declared as the default namespace (as EPU writes it)."""
    return f"{_T_ID}{value}</Id>"


def xy_xml(p: str, x: float, y: float) -> str:
    return f"<{p}:x>{num(x)}</{p}:x><{p}:y>{num(y)}</{p}:y>"


def stage_xml(p: str, s: Stage, *, with_ab: bool = True) -> str:
    """A stage position's children in prefix ``p`` (A, B, X, Y, Z: alphabetical, as serialised)."""
    ab = f"<{p}:A>{num(s.a)}</{p}:A><{p}:B>{num(s.b)}</{p}:B>" if with_ab else ""
    return f"{ab}<{p}:X>{num(s.x)}</{p}:X><{p}:Y>{num(s.y)}</{p}:Y><{p}:Z>{num(s.z)}</{p}:Z>"


def dictionary_head(
    z: ZIds, type_name: str, comparer: str | None, comparer_ref: int | None, version: int, hash_size: int
) -> tuple[str, int]:
    """``Version``/``Comparer``/``HashSize`` of a serialised ``Dictionary`` (no namespace); returns the comparer id."""
    head = f'<Version z:Id="{z()}" z:Type="System.Int32" z:Assembly="0" xmlns="">{version}</Version>'
    if comparer_ref is not None:
        head += f'<Comparer z:Ref="{comparer_ref}" i:nil="true" xmlns=""/>'
        cid = comparer_ref
    else:
        cid = z()
        head += f'<Comparer z:Id="{cid}" z:Type="{comparer}" z:Assembly="0" xmlns=""/>'
    head += f'<HashSize z:Id="{z()}" z:Type="System.Int32" z:Assembly="0" xmlns="">{hash_size}</HashSize>'
    del type_name
    return head, cid


def version_xml(z: ZIds, p: str, revision: int) -> str:
    return (
        f'<Version z:Id="{z()}" xmlns:{p}="{NS_SYS}"><{p}:_Build>0</{p}:_Build><{p}:_Major>3</{p}:_Major>'
        f"<{p}:_Minor>0</{p}:_Minor><{p}:_Revision>{revision}</{p}:_Revision></Version>"
    )


__all__ = [
    "AREA_PAIR",
    "DMP_ASSEMBLY",
    "EPU_ASSEMBLY",
    "GA_ASSEMBLY",
    "GS_PAIR",
    "INT_COMPARER",
    "NODE_PAIR",
    "PARTICLE_PAIR",
    "PRESET_KEYS",
    "PRESET_PAIR",
    "SAMPLE_PAIR",
    "STRING_COMPARER",
    "TARGET_PAIR",
    "dictionary_head",
    "dm_renderer",
    "id_xml",
    "stage_xml",
    "version_xml",
    "xy_xml",
]
