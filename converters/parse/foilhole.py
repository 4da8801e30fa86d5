"""Foil-hole image XMLs (``FoilHoles/FoilHole_<id>_<ts>.xml``): the image fields of one hole."""

from __future__ import annotations

from converters._xml import (
    Reader,
)
from converters.models import (
    FoilHoleData,
)
from converters.parse.image import _image_metadata
from converters.parse.results import (
    ParsedFoilHoleImage,
)
from converters.paths import (
    EpuPath,
    PathMap,
)


def _parse_foilhole_image(r: Reader, info: EpuPath, path_map: PathMap | None) -> ParsedFoilHoleImage:
    image = _image_metadata(r, r.root)
    if info.foilhole_id is None:  # pragma: no cover - classify_path always sets it for this kind
        raise r.malformed("foil-hole image without a foil-hole id in its name", r.root)
    hole = FoilHoleData(
        foilhole_id=info.foilhole_id,
        gridsquare_id=info.gridsquare_id,
        session_root=info.session_root,
        found_hole=image.found_hole,
        image_stage_position=image.stage_position,
        image=image,
        image_timestamp=info.timestamp,
        image_path=info.path,
    )
    return ParsedFoilHoleImage(path=info.path, epu_path=info, image=image, foilhole=hole)
