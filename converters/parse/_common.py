"""Pieces shared by the per-kind readers: Clark names built once and the small value readers (stage
positions, vectors, draw points and sizes)."""

from __future__ import annotations

from typing import Any

from converters._xml import (
    NS_ARR,
    NS_DRAW,
    NS_EPU,
    NS_EPU_OLD,
    NS_FT,
    NS_GA,
    NS_GAD,
    NS_SCR,
    NS_SO,
    NS_T,
    Element,
    Reader,
    q,
)

_SO = {name: q(NS_SO, name) for name in (
    "name", "uniqueID", "CustomData", "SpatialScale", "pixelSize", "x", "y", "numericValue", "microscopeData",
    "acquisition", "acquisitionDateTime", "camera", "Binning", "CameraSpecificInput", "ExposureTime", "Name",
    "ReadoutArea", "core", "ApplicationSoftware", "ApplicationSoftwareVersion", "gun", "AccelerationVoltage",
    "instrument", "ComputerName", "InstrumentID", "InstrumentModel", "optics", "BeamShift", "BeamTilt",
    "Defocus",
    "EFTEMOn", "EnergyFilter", "EnergySelectionSlitInserted", "EnergySelectionSlitWidth", "ImageShift",
    "ProbeMode", "SpotIndex", "TemMagnification", "NominalMagnification", "stage", "Position",
    "A", "B", "X", "Y", "Z",
)}  # fmt: skip
_D_X, _D_Y, _D_W, _D_H = (q(NS_DRAW, n) for n in ("x", "y", "width", "height"))
_FT_X, _FT_Y = q(NS_FT, "_x"), q(NS_FT, "_y")
_SO_IMAGE = q(NS_SO, "MicroscopeImage")
_T_ID = q(NS_T, "Id")
_T_BASE = q(NS_T, "BaseFileName")
_T_FORMAT = q(NS_T, "FileFormat")
_T_FILENAME = q(NS_T, "FileName")
_ARR_KEY, _ARR_VALUE = q(NS_ARR, "Key"), q(NS_ARR, "Value")


# Clark names, built once: building them per lookup showed up in profiles of 570-hole grid squares.
_EPU_NAMES = (
    "AtlasId",
    "AtlasNodeId",
    "AutoloaderDescription",
    "AutoloaderSlot",
    "ClusteringMode",
    "ClusteringRadius",
    "DataAcquisitionAreas",
    "Defocus",
    "DoseFractionsOutputFormat",
    "EndDateTime",
    "ExposureTime",
    "FilterHolesSettings",
    "GridGeometry",
    "GridSquareId",
    "GridSquareImagePath",
    "GridSquareShape",
    "GridSquares",
    "GridType",
    "HoleSize",
    "HoleSpacing",
    "Image",
    "ImageFileFormat",
    "IsNearGridBar",
    "Name",
    "Order",
    "ParticleAcquisitions",
    "Path",
    "PixelCenter",
    "PixelWidthHeight",
    "Position",
    "Quality",
    "Rotation",
    "Samples",
    "Selected",
    "StagePosition",
    "StartDateTime",
    "State",
    "StorageFolders",
    "TargetAreaTemplate",
    "TargetLocations",
    "TargetLocationsEfficient",
    "TemplateImagePixelSize",
    "Unusable",
)
_EPU_TAGS = {ns: {n: q(ns, n) for n in _EPU_NAMES} for ns in (NS_EPU, NS_EPU_OLD)}
_GA_TAGS = {
    n: q(NS_GA, n)
    for n in (
        "AcquisitionDateTime",
        "AlignedStagePosition",
        "Atlas",
        "AtlasAlignmentTransformation",
        "AtlasImageReference",
        "AtlasPixelPosition",
        "Category",
        "Description",
        "Name",
        "NodePosition",
        "Nodes",
        "PositionOnTheAtlas",
        "StagePosition",
        "StartDateTime",
        "StorageFolder",
        "TileId",
        "TileImageReference",
        "TilePositions",
        "TilesEfficient",
    )
}
_SCR_TAGS = {
    n: q(NS_SCR, n)
    for n in (
        "AcquiredAtlasAvailable",
        "AtlasAcquisitionStatus",
        "AtlasSession",
        "AtlasSessionStorageFolder",
        "Name",
        "Samples",
        "SlotId",
        "SpecimenCarrierType",
        "StartDateTime",
        "StorageFolder",
    )
}


# The helpers below return the field values of a nested value object (StagePosition, Vector2, FoundHole,
# Fractionation) as a dict, which the model holding it validates: one pydantic call builds the whole tree, which
# measured about twice as fast as constructing each nested model separately. Field sets are the same as
# keyword construction would give (``model_fields_set`` included).
Fields = dict[str, Any]
_SO_X, _SO_Y, _SO_Z, _SO_A, _SO_B = (_SO[n] for n in ("X", "Y", "Z", "A", "B"))


def _stage(r: Reader, el: Element | None) -> Fields | None:
    """``Position``-shaped element (``so:X/Y/Z/A/B``) -> :class:`StagePosition` fields."""
    kids = r.kids(el)
    if not kids:
        return None
    as_float = r.as_float
    return {
        "x_m": as_float(kids.get(_SO_X)),
        "y_m": as_float(kids.get(_SO_Y)),
        "z_m": as_float(kids.get(_SO_Z)),
        "alpha_rad": as_float(kids.get(_SO_A)),
        "beta_rad": as_float(kids.get(_SO_B)),
    }


def _vector(r: Reader, el: Element | None) -> Fields | None:
    """``ft:_x/_y`` vector -> :class:`Vector2` fields (``None`` unless both are set)."""
    kids = r.kids(el)
    x, y = r.as_float(kids.get(_FT_X)), r.as_float(kids.get(_FT_Y))
    return None if x is None or y is None else {"x": x, "y": y}


def _point(r: Reader, el: Element | None) -> tuple[float | None, float | None]:
    """``draw:x/y``."""
    kids = r.kids(el)
    return r.as_float(kids.get(_D_X)), r.as_float(kids.get(_D_Y))


def _size(r: Reader, el: Element | None) -> tuple[float | None, float | None]:
    """``draw:width/height``."""
    kids = r.kids(el)
    return r.as_float(kids.get(_D_W)), r.as_float(kids.get(_D_H))


def _rect(r: Reader, el: Element | None) -> tuple[float | None, float | None, float | None, float | None]:
    """``draw:x/y/width/height`` of one element (``_point`` and ``_size`` with one children map)."""
    kids = r.kids(el)
    as_float = r.as_float
    return (
        as_float(kids.get(_D_X)),
        as_float(kids.get(_D_Y)),
        as_float(kids.get(_D_W)),
        as_float(kids.get(_D_H)),
    )


_GAD_CENTER, _GAD_SIZE, _GAD_PHYSICAL, _GAD_ROTATION, _GAD_QUALITY = (
    q(NS_GAD, n) for n in ("Center", "Size", "Physical", "Rotation", "Quality")
)


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else round(value)


def _epu_ns(r: Reader, root: Element, expected: str) -> str:
    """The EPU persistence namespace of ``root`` (new or EPU 1.2/1.3), checking the root's local name."""
    tag = str(root.tag)
    for ns in (NS_EPU, NS_EPU_OLD):
        if tag == q(ns, expected):
            return ns
    raise r.malformed(f"expected root {expected} in an EPU persistence namespace, found {tag}", root)
