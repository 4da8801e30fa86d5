"""Result types of :func:`converters.parse.parse_file`: one per :class:`~converters.paths.EpuFileKind`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from converters.models import (
    AcquisitionData,
    AtlasData,
    AtlasTileData,
    AtlasTileGridSquarePositionData,
    FoilHoleData,
    FractionsData,
    GridData,
    GridSquareData,
    ImageMetadata,
    MicrographData,
    SampleData,
    ScreeningSessionData,
)
from converters.paths import (
    EpuFileKind,
    EpuPath,
)


class _Parsed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    epu_path: EpuPath
    warnings: list[str] = []

    def entities(self) -> list[BaseModel]:
        """The domain models this file yields, parents first."""
        raise NotImplementedError  # every concrete result overrides this


class ParsedSession(_Parsed):
    """``EpuSession.dm``: the acquisition and its grid (one grid per session)."""

    kind: Literal[EpuFileKind.SESSION] = EpuFileKind.SESSION
    acquisition: AcquisitionData
    grid: GridData

    def entities(self) -> list[BaseModel]:
        """Acquisition, then grid."""
        return [self.acquisition, self.grid]


class ParsedGridSquareMetadata(_Parsed):
    """``Metadata/GridSquare_<id>.dm``: the square and every foil hole on it."""

    kind: Literal[EpuFileKind.GRIDSQUARE_METADATA] = EpuFileKind.GRIDSQUARE_METADATA
    gridsquare: GridSquareData
    foilholes: list[FoilHoleData]

    def entities(self) -> list[BaseModel]:
        """Square, then its holes."""
        return [self.gridsquare, *self.foilholes]


class ParsedGridSquareImage(_Parsed):
    """``GridSquare_<ts>.xml``: a square's image metadata (``gridsquare`` is ``None`` outside a session)."""

    kind: Literal[EpuFileKind.GRIDSQUARE_IMAGE] = EpuFileKind.GRIDSQUARE_IMAGE
    image: ImageMetadata
    gridsquare: GridSquareData | None = None

    def entities(self) -> list[BaseModel]:
        """The partial square when its id is known."""
        return [self.gridsquare] if self.gridsquare is not None else []


class ParsedFoilHoleImage(_Parsed):
    """``FoilHoles/FoilHole_<id>_<ts>.xml``: the image fields of one hole (newest image wins)."""

    kind: Literal[EpuFileKind.FOILHOLE_IMAGE] = EpuFileKind.FOILHOLE_IMAGE
    image: ImageMetadata
    foilhole: FoilHoleData

    def entities(self) -> list[BaseModel]:
        """The partial hole."""
        return [self.foilhole]


class ParsedMicrograph(_Parsed):
    """``Data/FoilHole_<fh>_Data_<a>_<b>_<ts>.xml``: one exposure."""

    kind: Literal[EpuFileKind.MICROGRAPH] = EpuFileKind.MICROGRAPH
    micrograph: MicrographData

    def entities(self) -> list[BaseModel]:
        """The micrograph."""
        return [self.micrograph]


class ParsedFractions(_Parsed):
    """``*_Fractions.xml`` (camera software): belongs to micrograph ``micrograph_id``."""

    kind: Literal[EpuFileKind.FRACTIONS] = EpuFileKind.FRACTIONS
    micrograph_id: str
    fractions: FractionsData

    def entities(self) -> list[BaseModel]:
        """The fractions summary (attach it to the micrograph)."""
        return [self.fractions]


class ParsedAtlas(_Parsed):
    """``Atlas.dm``: atlas, tiles (with their grid-square positions) and atlas-derived grid-square fields.

    The atlas does not know its session: link it to a grid whose ``atlas_local_path`` equals
    ``atlas.atlas_path``.
    """

    kind: Literal[EpuFileKind.ATLAS] = EpuFileKind.ATLAS
    atlas: AtlasData
    gridsquares: list[GridSquareData] = []

    @property
    def tiles(self) -> list[AtlasTileData]:
        """The atlas tiles."""
        return self.atlas.tiles

    @property
    def positions(self) -> list[AtlasTileGridSquarePositionData]:
        """Every tile/grid-square link."""
        return [p for tile in self.atlas.tiles for p in tile.gridsquare_positions]

    def entities(self) -> list[BaseModel]:
        """Atlas, tiles, then the atlas-derived grid squares."""
        return [self.atlas, *self.atlas.tiles, *self.gridsquares]


class ParsedAtlasImage(_Parsed):
    """``Atlas_<atlasId>.xml``: stitched atlas image metadata."""

    kind: Literal[EpuFileKind.ATLAS_IMAGE] = EpuFileKind.ATLAS_IMAGE
    atlas_id: str
    image: ImageMetadata

    def entities(self) -> list[BaseModel]:
        """No entity of its own (metadata of the atlas)."""
        return []


class ParsedAtlasTile(_Parsed):
    """``Tile_<tileId>_<n>_<atlasId>.xml``: one tile's image metadata."""

    kind: Literal[EpuFileKind.ATLAS_TILE] = EpuFileKind.ATLAS_TILE
    tile: AtlasTileData

    def entities(self) -> list[BaseModel]:
        """The partial tile."""
        return [self.tile]


class ParsedSample(_Parsed):
    """``Sample<k>/Sample.dm``."""

    kind: Literal[EpuFileKind.SAMPLE] = EpuFileKind.SAMPLE
    sample: SampleData

    def entities(self) -> list[BaseModel]:
        """The sample."""
        return [self.sample]


class ParsedScreeningSession(_Parsed):
    """``ScreeningSession.dm``."""

    kind: Literal[EpuFileKind.SCREENING_SESSION] = EpuFileKind.SCREENING_SESSION
    screening: ScreeningSessionData

    def entities(self) -> list[BaseModel]:
        """The screening session."""
        return [self.screening]


ParsedFile = (
    ParsedSession
    | ParsedGridSquareMetadata
    | ParsedGridSquareImage
    | ParsedFoilHoleImage
    | ParsedMicrograph
    | ParsedFractions
    | ParsedAtlas
    | ParsedAtlasImage
    | ParsedAtlasTile
    | ParsedSample
    | ParsedScreeningSession
)
"""Union of every result type; switch on ``.kind``."""
