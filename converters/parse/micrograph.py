"""Micrograph XMLs (``Data/FoilHole_<fh>_Data_...xml``) and the camera's ``_Fractions.xml``."""

from __future__ import annotations

from pathlib import PurePath

from converters._xml import (
    Reader,
)
from converters.models import (
    FractionsData,
    MicrographData,
)
from converters.parse.image import _image_metadata
from converters.parse.results import (
    ParsedFractions,
    ParsedMicrograph,
)
from converters.paths import (
    _MICROGRAPH_STEM_RE,
    EpuPath,
    PathMap,
)


def _parse_micrograph(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedMicrograph:
    image = _image_metadata(r, r.root)
    stem = info.micrograph_id or PurePath(info.path).stem
    # The pattern of parse_micrograph_stem, without building the timestamp that is not used here.
    if info.foilhole_id is None or _MICROGRAPH_STEM_RE.match(stem) is None:
        raise r.malformed(
            f"micrograph name {stem!r} does not match FoilHole_<id>_Data_<a>_<b>_<date>_<time>", r.root
        )
    micrograph = MicrographData(
        micrograph_id=stem,
        foilhole_id=info.foilhole_id,
        gridsquare_id=info.gridsquare_id,
        session_root=info.session_root,
        location_id=info.location_id,
        setting_id=info.setting_id,
        name_timestamp=info.timestamp,
        manifest_file=info.path,
        image=image,
    )
    return ParsedMicrograph(path=info.path, epu_path=info, micrograph=micrograph)


# ------------------------------------------------------------------------------------------------------------
# _Fractions.xml
# ------------------------------------------------------------------------------------------------------------


def _parse_fractions(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedFractions:
    root = r.root
    if root.tag != "Acquisition":
        raise r.malformed(f"expected root Acquisition (no namespace), found {root.tag}", root)
    top = r.kids(root)
    meta = r.kids(top.get("Info"))
    roi = r.kids(meta.get("RegionOfInterest"))
    frames = 0
    count = 0
    for fraction in r.elements(top.get("Fractions")):
        if fraction.tag != "Fraction":
            continue
        count += 1
        frames += r.as_int(r.kids(fraction).get("NumberOfFrames")) or 0
    counting = r.as_str(meta.get("ElectronCounting"))
    fractions = FractionsData(
        detector=r.as_str(meta.get("Detector")),
        acquisition_id=r.as_str(meta.get("AcquisitionID")),
        acquisition_datetime=r.as_datetime(meta.get("DateTimeWithTimeZone")),
        file_version=r.as_str(meta.get("FileVersion")),
        expected_fractions=r.as_int(meta.get("ExpectedNumberOfFractions")),
        recorded_fractions=r.as_int(meta.get("RecordedNumberOfFractions")),
        frame_count=frames if count else None,
        fraction_count=count,
        width_px=r.as_int(roi.get("Width")),
        height_px=r.as_int(roi.get("Height")),
        binning=r.as_int(meta.get("Binning")),
        electron_counting=None if counting is None else counting.lower() == "on",
        format=r.as_str(meta.get("Format")),
    )
    micrograph_id = info.micrograph_id or PurePath(info.path).stem.removesuffix("_Fractions")
    return ParsedFractions(path=info.path, epu_path=info, micrograph_id=micrograph_id, fractions=fractions)
