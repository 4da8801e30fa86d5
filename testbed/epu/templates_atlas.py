"""The atlas screening session's files: ``Atlas.dm`` (tiles and grid-square nodes), ``Sample.dm`` and
``ScreeningSession.dm``.
"""

from __future__ import annotations

from testbed.epu.dotnet import (
    INT32,
    NS_AA,
    NS_ARR,
    NS_DRAW,
    NS_GA,
    NS_GAD,
    NS_GEN,
    NS_SCR,
    NS_SO,
    NS_SYS,
    NS_T,
    ROOT_XMLNS,
    ZIds,
    num,
    text,
    timestamp,
)
from testbed.epu.plan import (
    GRIDATLAS_VERSION,
    AtlasPlan,
    GridPlan,
    GridSquarePlan,
    SessionPlan,
    Stage,
    TilePlan,
)
from testbed.epu.templates_common import (
    GA_ASSEMBLY,
    INT_COMPARER,
    NODE_PAIR,
    SAMPLE_PAIR,
    dictionary_head,
    dm_renderer,
    id_xml,
    stage_xml,
    version_xml,
    xy_xml,
)
from testbed.epu.templates_settings import acquisition_settings, optics_settings

# ----------------------------------------------------------------------------------------------------------------
# Atlas.dm, Sample.dm, ScreeningSession.dm
# ----------------------------------------------------------------------------------------------------------------


def _node(z: ZIds, square: GridSquarePlan) -> str:
    """A grid square as an atlas ``Nodes`` entry of the tile it lies on."""
    cx, cy = square.atlas_center
    w, h = square.atlas_size
    px, py, pw, ph = square.physical

    def shape(prefix: str, center: tuple[float, float], size: tuple[float, float]) -> str:
        return (
            f'<{prefix}:Center xmlns:d="{NS_DRAW}">{xy_xml("d", *center)}</{prefix}:Center>'
            f'<{prefix}:Physical xmlns:d="{NS_DRAW}"><d:height>{num(ph)}</d:height><d:width>{num(pw)}</d:width>'
            f"<d:x>{num(px)}</d:x><d:y>{num(py)}</d:y></{prefix}:Physical><{prefix}:Quality>{num(square.atlas_quality)}</{prefix}:Quality>"
            f"<{prefix}:Rotation>{num(square.atlas_rotation)}</{prefix}:Rotation><{prefix}:Shear>0</{prefix}:Shear>"
            f'<{prefix}:Size xmlns:d="{NS_DRAW}"><d:height>{num(size[1])}</d:height><d:width>{num(size[0])}</d:width></{prefix}:Size>'
        )

    positions = "".join(
        f'<b:TilePositionXml z:Id="{z()}">{id_xml(pos.position_id)}<b:NodePosition xmlns:c="{NS_GAD}">'
        f"{shape('c', (round(pos.center[0], 4), round(pos.center[1], 4)), (round(pos.size[0], 4), round(pos.size[1], 4)))}"
        f"</b:NodePosition><b:TileId>{pos.tile_id}</b:TileId></b:TilePositionXml>"
        for pos in square.tile_positions
    )
    padding = '<b:TilePositionXml i:nil="true"/>' * (4 - len(square.tile_positions))
    features = "".join(f"<a:double>{num(f)}</a:double>" for f in square.features)
    return (
        f'<{NODE_PAIR} xmlns="{NS_GEN}"><key>{square.square_id}</key><value z:Id="{z()}" xmlns:b="{NS_GA}">'
        f'{id_xml(square.square_id)}<b:AlignedStagePosition xmlns:c="{NS_SO}">{stage_xml("c", square.aligned_stage)}</b:AlignedStagePosition>'
        f'<b:Category>{square.category}</b:Category><b:FeatureVector z:Id="{z()}" z:Size="{len(square.features)}">{features}</b:FeatureVector>'
        f'<b:PositionOnTheAtlas xmlns:c="{NS_GAD}">{shape("c", (cx, cy), (w, h))}</b:PositionOnTheAtlas>'
        f'<b:StagePosition xmlns:c="{NS_SO}">{stage_xml("c", Stage(square.stage.x, square.stage.y, 0.0))}</b:StagePosition>'
        f'<b:TilePositions z:Id="{z()}"><b:_items z:Id="{z()}" z:Size="4">{positions}{padding}</b:_items>'
        f"<b:_size>{len(square.tile_positions)}</b:_size><b:_version>{len(square.tile_positions)}</b:_version></b:TilePositions>"
        f"</value></{NODE_PAIR}>"
    )


def _tile(z: ZIds, tile: TilePlan, squares: dict[int, GridSquarePlan], refs: dict[str, int]) -> str:
    node_type = f"Applications.SciencesAppsShared.GridAtlas.Persistence.NodeXml, {GA_ASSEMBLY}"
    tile_zid = z()
    x, y, w, h = tile.atlas_position
    nodes_id = z()
    head, comparer = dictionary_head(
        z, "", INT_COMPARER, refs.get("node_comparer"), len(tile.square_ids) * 2 + 1, 17
    )
    refs["node_comparer"] = comparer
    pairs_id = z()
    nodes = "".join(_node(z, squares[sid]) for sid in tile.square_ids)
    ref_id = z()
    return (
        f'<TileXml z:Id="{tile_zid}">{id_xml(tile.tile_id)}<AtlasPixelPosition xmlns:a="{NS_DRAW}"><a:height>{h}</a:height>'
        f"<a:width>{w}</a:width><a:x>{x}</a:x><a:y>{y}</a:y></AtlasPixelPosition>"
        f'<Nodes z:Id="{nodes_id}" z:Type="System.Collections.Generic.Dictionary`2[[{INT32}],[{node_type}]]" z:Assembly="0" xmlns:a="{NS_ARR}">'
        f'{head}<KeyValuePairs z:Id="{pairs_id}" z:Type="System.Collections.Generic.KeyValuePair`2[[{INT32}],[{node_type}]][]" '
        f'z:Assembly="0" z:Size="{len(tile.square_ids)}" xmlns="">{nodes}</KeyValuePairs></Nodes>'
        f'<StagePosition xmlns:a="{NS_SO}">{stage_xml("a", tile.stage)}</StagePosition>'
        f'<TileImageReference z:Id="{ref_id}" xmlns:a="{NS_T}"><a:BaseFileName z:Id="{z()}">{tile.image.stem}</a:BaseFileName>'
        f"<a:FileFormat>Mrc</a:FileFormat></TileImageReference></TileXml>"
    )


def _atlas_body(
    z: ZIds,
    p: str,
    atlas_id: int,
    acquired: str,
    *,
    session_ref: int,
    alignment: tuple[int, float, str] | None,
    image_stem: str | None,
    tiles_xml: str,
    n_tiles: int,
    capacity: int,
) -> str:
    """The ``Atlas`` element body (an ``AtlasXml``), children in prefix ``p`` (empty for the default namespace)."""
    q = f"{p}:" if p else ""
    settings_id = z()
    bare = alignment is None  # a tile-less screening atlas carries empty camera and optics settings
    body, _, _ = acquisition_settings(
        z, "a" if not p else "b", "b" if not p else "c", acquired, name_ref=None, items_ref=None, bare=bare
    )
    sp = "a" if not p else "b"
    vp = "b" if not p else "c"
    if alignment is not None:
        tile_id, rotation, when = alignment
        optics_id = z()
        align = (
            f"<{q}AlignmentTileId>{tile_id}</{q}AlignmentTileId>"
            f'<{q}AtlasAlignmentTransformation z:Id="{z()}" z:Type="Applications.SciencesAppsShared.Types.AtlasAlignment.AtlasAlignmentTransformationXml" '
            f'z:Assembly="Applications.SciencesAppsShared.Types, Version={GRIDATLAS_VERSION}, Culture=neutral, PublicKeyToken=null">'
            f'<Acquisition z:Ref="{settings_id}" i:nil="true" xmlns="{NS_AA}" xmlns:{sp}="{NS_SO}"/>'
            f'<Optics z:Id="{optics_id}" xmlns="{NS_AA}" xmlns:{sp}="{NS_SO}">{optics_settings(z, sp, vp, mag=4.0, defocus=-0.001, spot=8, lens="LM")}</Optics>'
            f'<Rotation xmlns="{NS_AA}">{num(rotation)}</Rotation><TimeStamp xmlns="{NS_AA}">{when}</TimeStamp>'
            f'<Translation xmlns="{NS_AA}" xmlns:{sp}="{NS_DRAW}"><{sp}:height>1.66927057E-05</{sp}:height>'
            f"<{sp}:width>7.14462E-07</{sp}:width></Translation></{q}AtlasAlignmentTransformation>"
        )
        optics_ref = f'<{q}OpticsSettings z:Ref="{optics_id}" i:nil="true" xmlns:{sp}="{NS_SO}"/>'
    else:
        align = f'<{q}AlignmentTileId i:nil="true"/><{q}AtlasAlignmentTransformation i:nil="true"/>'
        optics_ref = (
            f'<{q}OpticsSettings z:Id="{z()}" xmlns:{sp}="{NS_SO}">'
            f"{optics_settings(z, sp, vp, mag=0.0, defocus=0.0, spot=0, lens='LM', bare=True)}</{q}OpticsSettings>"
        )
    if image_stem is not None:
        image_ref = (
            f'<{q}AtlasImageReference z:Id="{z()}" xmlns:{sp}="{NS_T}"><{sp}:BaseFileName z:Id="{z()}">{image_stem}</{sp}:BaseFileName>'
            f"<{sp}:FileFormat>Mrc</{sp}:FileFormat></{q}AtlasImageReference>"
        )
    else:
        image_ref = f'<{q}AtlasImageReference i:nil="true" xmlns:{sp}="{NS_T}"/>'
    categories_items = z()
    n_cats = 0 if bare else 5
    cats = "".join(f"<{sp}:int>{k}</{sp}:int>" for k in range(n_cats)) + f"<{sp}:int>0</{sp}:int>" * (
        3 if n_cats else 0
    )
    cat_items = (
        f'<{sp}:_items z:Id="{z()}" z:Size="8">{cats}</{sp}:_items>'
        if n_cats
        else f'<{sp}:_items z:Id="{z()}" z:Size="0"/>'
    )
    tiles_padding = f'<{q}TileXml i:nil="true"/>' * (capacity - n_tiles)
    items = (
        f'<{q}_items z:Id="{z()}" z:Size="{capacity}">{tiles_xml}{tiles_padding}</{q}_items>'
        if capacity
        else f'<{q}_items z:Id="{z()}" z:Size="0"/>'
    )
    return (
        f"{id_xml(atlas_id)}<{q}AcquiredWithImageBeamShift>false</{q}AcquiredWithImageBeamShift>"
        f"<{q}AcquisitionDateTime>{acquired}</{q}AcquisitionDateTime>"
        f'<{q}AcquisitionSettings z:Id="{settings_id}" xmlns:{sp}="{NS_SO}">{body}</{q}AcquisitionSettings>'
        f"{align}{image_ref}"
        f'<{q}CryoboxReferenceVector xmlns:{sp}="{NS_DRAW}"><{sp}:x>0</{sp}:x><{sp}:y>0</{sp}:y></{q}CryoboxReferenceVector>'
        f'<{q}HighLmAlignmentImageReference i:nil="true" xmlns:{sp}="{NS_T}"/><{q}IsStem>false</{q}IsStem>'
        f'<{q}Name i:nil="true"/><{q}NrTiles i:nil="true"/>{optics_ref}'
        f'<{q}SelectedCategories z:Id="{categories_items}" xmlns:{sp}="{NS_ARR}">'
        f"{cat_items}<{sp}:_size>{n_cats}</{sp}:_size><{sp}:_version>{n_cats}</{sp}:_version></{q}SelectedCategories>"
        f'<{q}Session z:Ref="{session_ref}" i:nil="true"/><{q}StartPosition>CloseToCenter</{q}StartPosition>'
        f'<{q}TilesEfficient z:Id="{z()}">{items}<{q}_size>{n_tiles}</{q}_size><{q}_version>{n_tiles + 1}</{q}_version></{q}TilesEfficient>'
    )


@dm_renderer
def atlas_dm(plan: SessionPlan, grid: GridPlan) -> str:
    """``Sample<k>/Atlas/Atlas.dm`` of ``grid``: tiles, each with the grid squares (nodes) lying on it."""
    atlas = grid.atlas
    z = ZIds()
    root_id = z()
    squares = {s.square_id: s for s in grid.squares}
    refs: dict[str, int] = {}
    atlas_zid = z()
    capacity = 1
    while capacity < len(atlas.tiles):
        capacity *= 2  # List<T> capacity grows by doubling; unused slots are written as nil items
    body = _atlas_body_with_tiles(z, atlas, squares, refs, root_id, capacity)
    return (
        f'<AtlasSessionXml z:Id="{root_id}" z:Type="Applications.SciencesAppsShared.GridAtlas.Persistence.AtlasSessionXml" '
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_GA}" {ROOT_XMLNS}>{id_xml(atlas.atlas_id)}'
        f'<Atlas z:Id="{atlas_zid}">{body}</Atlas>'
        f'<Description z:Id="{z()}">Atlas for autoloader slot {atlas.slot}</Description><ImageFileFormat>Mrc</ImageFileFormat>'
        f'<Name z:Id="{z()}">Atlas</Name><StartDateTime>{timestamp(atlas.started)}</StartDateTime>'
        f'<StorageFolder z:Id="{z()}">{text(atlas.storage_folder_windows)}</StorageFolder>{version_xml(z, "a", -1)}</AtlasSessionXml>'
    )


def _atlas_body_with_tiles(
    z: ZIds,
    atlas: AtlasPlan,
    squares: dict[int, GridSquarePlan],
    refs: dict[str, int],
    root_id: int,
    capacity: int,
) -> str:
    """Render the atlas body; tiles need ids after the settings, so render in two passes with a shared counter."""
    tiles_marker = "\x00TILES\x00"
    body = _atlas_body(
        z,
        "",
        atlas.atlas_id,
        timestamp(atlas.acquired),
        session_ref=root_id,
        alignment=(atlas.alignment_tile_id, atlas.alignment_rotation, timestamp(atlas.acquired)),
        image_stem=atlas.image.stem,
        tiles_xml=tiles_marker,
        n_tiles=len(atlas.tiles),
        capacity=capacity,
    )
    # Nothing after ``TilesEfficient/_items`` in the body allocates ids, so rendering the tiles afterwards keeps
    # z:Ids increasing in document order (every z:Ref still follows its target).
    tiles_xml = "".join(_tile(z, tile, squares, refs) for tile in atlas.tiles)
    return body.replace(tiles_marker, tiles_xml)


@dm_renderer
def screening_root_atlas_dm(plan: SessionPlan) -> str:
    """``<screening>/Atlas/Atlas.dm``: the screening session's own atlas, without tiles."""
    screening = plan.screening
    z = ZIds()
    root_id = z()
    atlas_zid = z()
    body = _atlas_body(
        z,
        "",
        1,
        timestamp(screening.started),
        session_ref=root_id,
        alignment=None,
        image_stem=None,
        tiles_xml="",
        n_tiles=0,
        capacity=0,
    )
    return (
        f'<AtlasSessionXml z:Id="{root_id}" z:Type="Applications.SciencesAppsShared.GridAtlas.Persistence.AtlasSessionXml" '
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_GA}" {ROOT_XMLNS}>{id_xml(screening.root_atlas_id)}'
        f'<Atlas z:Id="{atlas_zid}">{body}</Atlas><Description z:Id="{z()}"/><ImageFileFormat>Mrc</ImageFileFormat>'
        f'<Name z:Id="{z()}">Atlas</Name><StartDateTime>{timestamp(screening.started)}</StartDateTime>'
        f'<StorageFolder z:Id="{z()}">{text(screening.storage_folder_windows)}\\{text(screening.name)}</StorageFolder>'
        f"{version_xml(z, 'a', -1)}</AtlasSessionXml>"
    )


@dm_renderer
def sample_dm(plan: SessionPlan, grid: GridPlan) -> str:
    """``Sample<k>/Sample.dm``."""
    del plan
    atlas = grid.atlas
    z = ZIds()
    return (
        f'<SampleXml z:Id="{z()}" z:Type="Applications.SciencesAppsShared.GridAtlas.Persistence.Screening.SampleXml" '
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_SCR}" {ROOT_XMLNS}>{id_xml(atlas.sample_id)}'
        "<AcquiredAtlasAvailable>true</AcquiredAtlasAvailable><AcquisitionPercentageCompleted>100</AcquisitionPercentageCompleted>"
        f'<AtlasAcquisitionStatus z:Id="{z()}">Acquired</AtlasAcquisitionStatus>'
        f'<AtlasSessionStorageFolder z:Id="{z()}">.</AtlasSessionStorageFolder><Guid>00000000-0000-0000-0000-000000000000</Guid>'
        f'<HistoricSample>false</HistoricSample><Name z:Id="{z()}">{text(atlas.sample_name)}</Name>'
        f"<SelectedForAtlasAcquisition>true</SelectedForAtlasAcquisition><SlotId>{atlas.slot}</SlotId>"
        f'<SpecimenCarrierType z:Id="{z()}">Occupied</SpecimenCarrierType>{version_xml(z, "a", -1)}</SampleXml>'
    )


@dm_renderer
def screening_session_dm(plan: SessionPlan) -> str:
    """``ScreeningSession.dm``: the embedded tile-less atlas session and the slot -> ``Sample.dm`` dictionary."""
    screening = plan.screening
    z = ZIds()
    root_id = z()
    atlas_session = z()
    atlas_zid = z()
    body = _atlas_body(
        z,
        "a",
        1,
        timestamp(screening.started),
        session_ref=atlas_session,
        alignment=None,
        image_stem=None,
        tiles_xml="",
        n_tiles=0,
        capacity=0,
    )
    description = z()
    atlas_xml = (
        f'<AtlasSession z:Id="{atlas_session}" xmlns:a="{NS_GA}">{id_xml(screening.atlas_session_id)}'
        f'<a:Atlas z:Id="{atlas_zid}">{body}</a:Atlas><a:Description z:Id="{description}"/><a:ImageFileFormat>Mrc</a:ImageFileFormat>'
        f'<a:Name z:Id="{z()}">Atlas</a:Name><a:StartDateTime>{timestamp(screening.started)}</a:StartDateTime>'
        f'<a:StorageFolder z:Id="{z()}">{text(screening.storage_folder_windows)}\\{text(screening.name)}</a:StorageFolder>'
        f'<a:Version z:Id="{z()}" xmlns:b="{NS_SYS}"><b:_Build>0</b:_Build><b:_Major>3</b:_Major><b:_Minor>0</b:_Minor>'
        f"<b:_Revision>-1</b:_Revision></a:Version></AtlasSession>"
    )
    ref_type = (
        f"Fei.Applications.Common.Types.SerializedReference`1[[Applications.SciencesAppsShared.GridAtlas.Persistence.Screening.SampleXml, "
        f"{GA_ASSEMBLY}]], Fei.Applications.Common.Types, Version=6.7.0.0, Culture=neutral, PublicKeyToken=null"
    )
    name_id = z()
    samples_id = z()
    dict_id = z()
    head, _ = dictionary_head(z, "", INT_COMPARER, None, len(plan.grids), 7)
    pairs_id = z()
    pairs = []
    file_id: int | None = None
    for grid in plan.grids:
        value_id = z()
        if file_id is None:
            file_id = z()
            file_name = f'<c:FileName z:Id="{file_id}">Sample.dm</c:FileName>'
        else:
            file_name = f'<c:FileName z:Ref="{file_id}" i:nil="true"/>'
        pairs.append(
            f'<{SAMPLE_PAIR} xmlns="{NS_GEN}"><key>{grid.atlas.slot}</key><value z:Id="{value_id}" xmlns:c="{NS_T}">'
            f"{file_name}</value></{SAMPLE_PAIR}>"
        )
    return (
        f'<ScreeningSessionXml z:Id="{root_id}" z:Type="Applications.SciencesAppsShared.GridAtlas.Persistence.Screening.ScreeningSessionXml" '
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_SCR}" {ROOT_XMLNS}>{id_xml(screening.screening_id)}{atlas_xml}'
        f'<Description z:Ref="{description}" i:nil="true"/><ImageFileFormat>Mrc</ImageFileFormat>'
        f'<Name z:Id="{name_id}">{text(screening.name)}</Name>'
        f'<Samples z:Id="{samples_id}" xmlns:a="{NS_GA}">{id_xml(screening.samples_id)}'
        f'<a:Samples z:Id="{dict_id}" z:Type="System.Collections.Generic.Dictionary`2[[{INT32}],[{ref_type}]]" z:Assembly="0" xmlns:b="{NS_ARR}">'
        f'{head}<KeyValuePairs z:Id="{pairs_id}" z:Type="System.Collections.Generic.KeyValuePair`2[[{INT32}],[{ref_type}]][]" '
        f'z:Assembly="0" z:Size="{len(pairs)}" xmlns="">{"".join(pairs)}</KeyValuePairs></a:Samples></Samples>'
        f"<StartDateTime>{timestamp(screening.started)}</StartDateTime>"
        f'<StorageFolder z:Id="{z()}">{text(screening.storage_folder_windows)}</StorageFolder>{version_xml(z, "a", -1)}</ScreeningSessionXml>'
    )


__all__ = [
    "atlas_dm",
    "sample_dm",
    "screening_root_atlas_dm",
    "screening_session_dm",
]
