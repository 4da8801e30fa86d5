"""``Metadata/GridSquare_<id>.dm``: a grid square with its foil holes and, once imaged, their micrographs."""

from __future__ import annotations

from testbed.epu.dotnet import (
    INT32,
    NS_ARR,
    NS_DRAW,
    NS_EPU,
    NS_GEN,
    NS_SAT,
    NS_SO,
    NS_T,
    ROOT_XMLNS,
    ZIds,
    boolean,
    num,
    text,
)
from testbed.epu.plan import (
    HOLE_SPACING_M,
    READOUT_H,
    READOUT_W,
    FoilHolePlan,
    GridPlan,
    GridSquarePlan,
    SessionPlan,
)
from testbed.epu.templates_common import (
    EPU_ASSEMBLY,
    INT_COMPARER,
    PARTICLE_PAIR,
    TARGET_PAIR,
    dictionary_head,
    dm_renderer,
    id_xml,
    stage_xml,
    xy_xml,
)

# ----------------------------------------------------------------------------------------------------------------
# Metadata/GridSquare_<id>.dm
# ----------------------------------------------------------------------------------------------------------------


def _hole_entry(
    z: ZIds,
    plan: SessionPlan,
    grid: GridPlan,
    square: GridSquarePlan,
    hole: FoilHolePlan,
    *,
    final: bool,
    refs: dict[str, int],
) -> str:
    """One ``TargetLocationsEfficient`` entry; in a ``final`` rewrite imaged holes carry their images."""
    value_id = z()
    imaged = final and hole.imaged
    images_dir = f"{plan.storage_windows}\\{grid.session_name}\\Images-Disc1\\GridSquare_{square.square_id}"
    if imaged:
        latest = hole.images[-1]
        image = (
            f'<FoilHoleImagePath z:Id="{z()}">{images_dir}\\FoilHoles\\{latest.stem}.tiff</FoilHoleImagePath>'
            f"<GridSquareId>{square.square_id}</GridSquareId>"
            f'<Image z:Id="{z()}" xmlns:c="{NS_T}"><c:BaseFileName z:Id="{z()}">{latest.stem}</c:BaseFileName>'
            f'<c:FileFormat>Tiff</c:FileFormat></Image><ImageFolderName z:Id="{z()}">Images-Disc1</ImageFolderName>'
        )
    else:
        image = (
            f'<FoilHoleImagePath i:nil="true"/><GridSquareId>{square.square_id}</GridSquareId>'
            f'<Image i:nil="true" xmlns:c="{NS_T}"/><ImageFolderName i:nil="true"/>'
        )
    particle_type = (
        f"System.Collections.Generic.Dictionary`2[[{INT32}],[Applications.Epu.Persistence.ParticleAcquisitionDataXml, "
        f"{EPU_ASSEMBLY}]]"
    )
    pa_id = z()
    if imaged:
        head, comparer = dictionary_head(
            z, "", INT_COMPARER, refs.get("pa_comparer"), len(hole.micrographs), 7
        )
        refs["pa_comparer"] = comparer
        pairs_id = z()
        pairs = []
        for mic in hole.micrographs:
            pairs.append(
                f'<b:{PARTICLE_PAIR}><b:key>{mic.particle_id}</b:key><b:value z:Id="{z()}" xmlns:c="{NS_EPU}">'
                f"{id_xml(mic.particle_id)}<c:DataAcquisitionAreaId>{mic.area_id}</c:DataAcquisitionAreaId>"
                f'<c:GridSquareId>{square.square_id}</c:GridSquareId><c:Image z:Id="{z()}" xmlns:d="{NS_T}">'
                f'<d:BaseFileName z:Id="{z()}">{mic.image.stem}</d:BaseFileName><d:FileFormat>Tiff</d:FileFormat></c:Image>'
                f"<c:ImageAcquisitionSettingId>{mic.setting_id}</c:ImageAcquisitionSettingId>"
                f'<c:ImageFolderName z:Id="{z()}">Images-Disc1</c:ImageFolderName>'
                f"<c:TargetLocationId>{hole.hole_id}</c:TargetLocationId></b:value></b:{PARTICLE_PAIR}>"
            )
        particles = (
            f'<ParticleAcquisitions z:Id="{pa_id}" z:Type="{particle_type}" z:Assembly="0">{head}'
            f'<KeyValuePairs z:Id="{pairs_id}" z:Type="System.Collections.Generic.KeyValuePair`2[[{INT32}],'
            f'[Applications.Epu.Persistence.ParticleAcquisitionDataXml, {EPU_ASSEMBLY}]][]" z:Assembly="0" '
            f'z:Size="{len(pairs)}" xmlns="">{"".join(pairs)}</KeyValuePairs></ParticleAcquisitions>'
        )
    else:
        head, comparer = dictionary_head(z, "", INT_COMPARER, refs.get("pa_comparer"), 0, 0)
        refs["pa_comparer"] = comparer
        particles = f'<ParticleAcquisitions z:Id="{pa_id}" z:Type="{particle_type}" z:Assembly="0">{head}</ParticleAcquisitions>'
    secondary_id = z()
    if "secondary_items" in refs:
        secondary_items = f'<a:_items z:Ref="{refs["secondary_items"]}" i:nil="true"/>'
    else:
        refs["secondary_items"] = z()
        secondary_items = f'<a:_items z:Id="{refs["secondary_items"]}" z:Size="0"/>'
    state = hole.final_state if final else "Defined"
    primary = f"<PrimaryId>{hole.hole_id}</PrimaryId>" if imaged else '<PrimaryId i:nil="true"/>'
    return (
        f'<b:{TARGET_PAIR}><b:key>{hole.hole_id}</b:key><b:value z:Id="{value_id}">{id_xml(hole.hole_id)}'
        f'<BeamShiftId i:nil="true"/><CorrectedStagePosition xmlns:c="{NS_SO}">'
        f"<c:A>0</c:A><c:B>0</c:B><c:X>0</c:X><c:Y>0</c:Y><c:Z>0</c:Z></CorrectedStagePosition>"
        f'<FilterProperties z:Id="{z()}"><PixelIntensityMean>{num(hole.intensity_mean)}</PixelIntensityMean>'
        f"<PixelIntensityStDev>{num(hole.intensity_std)}</PixelIntensityStDev></FilterProperties>{image}"
        f"<IsNearGridBar>{boolean(hole.near_grid_bar)}</IsNearGridBar><IsPositionCorrected>false</IsPositionCorrected>"
        f'<IsPositionRefined>false</IsPositionRefined><IsRecommendedSelection i:nil="true"/><Order>{hole.order}</Order>'
        f'{particles}<PixelCenter xmlns:c="{NS_DRAW}">{xy_xml("c", *hole.center)}</PixelCenter>'
        f'<PixelWidthHeight xmlns:c="{NS_DRAW}"><c:height>{num(hole.diameter_px)}</c:height><c:width>{num(hole.diameter_px)}</c:width>'
        f'</PixelWidthHeight><PositionInCluster i:nil="true" xmlns:c="{NS_DRAW}"/>{primary}'
        f'<Quality>{num(hole.quality)}</Quality><Rotation>0</Rotation><SecondaryTargetLocationdIds z:Id="{secondary_id}">'
        f"{secondary_items}<a:_size>0</a:_size><a:_version>0</a:_version></SecondaryTargetLocationdIds>"
        f'<Selected>{boolean(hole.selected)}</Selected><Shear>0</Shear><SmartIceThicknessResult i:nil="true"/>'
        f'<StagePosition xmlns:c="{NS_SO}">{stage_xml("c", hole.stage)}</StagePosition><State>{state}</State>'
        f"</b:value></b:{TARGET_PAIR}>"
    )


@dm_renderer
def gridsquare_dm(plan: SessionPlan, grid: GridPlan, square: GridSquarePlan, version: int) -> str:
    """``Metadata/GridSquare_<id>.dm``.

    ``version`` 0: before imaging (no image, no holes); 1: holes found (image set, holes ``Defined``); 2: final
    (imaged holes ``Completed`` with their latest image and micrographs). Non-imaged squares only have version 0.
    """
    z = ZIds()
    root_id = z()
    has_image = version >= 1 and square.image is not None
    if has_image:
        assert square.image is not None
        image_path = f"{plan.storage_windows}\\{grid.session_name}\\Images-Disc1\\GridSquare_{square.square_id}\\{square.image.stem}.tiff"
        path = f'<GridSquareImagePath z:Id="{z()}">{text(image_path)}</GridSquareImagePath>'
        vertices = "".join(f"<b:PointF>{xy_xml('b', x, y)}</b:PointF>" for x, y in square.outline)
        xs = [v[0] for v in square.outline] or [0.0]
        ys = [v[1] for v in square.outline] or [0.0]
        shape = (
            f'<GridSquareShape z:Id="{z()}" xmlns:a="{NS_SAT}"><a:center xmlns:b="{NS_DRAW}">{xy_xml("b", READOUT_W / 2, READOUT_H / 2)}</a:center>'
            f'<a:max xmlns:b="{NS_DRAW}">{xy_xml("b", max(xs), max(ys))}</a:max><a:min xmlns:b="{NS_DRAW}">{xy_xml("b", min(xs), min(ys))}</a:min>'
            f'<a:vertices z:Id="{z()}" z:Size="{len(square.outline)}" xmlns:b="{NS_DRAW}">{vertices}</a:vertices></GridSquareShape>'
        )
        image = (
            f'<Image z:Id="{z()}" xmlns:a="{NS_T}"><a:BaseFileName z:Id="{z()}">{square.image.stem}</a:BaseFileName>'
            f'<a:FileFormat>Tiff</a:FileFormat></Image><ImageFolderName z:Id="{z()}">Images-Disc1</ImageFolderName>'
        )
    else:
        path = '<GridSquareImagePath i:nil="true"/>'
        shape = '<GridSquareShape i:nil="true" xmlns:a="' + NS_SAT + '"/>'
        image = f'<Image i:nil="true" xmlns:a="{NS_T}"/><ImageFolderName i:nil="true"/>'
    state = (
        {0: "Defined", 1: "InProgress", 2: square.final_state}[version]
        if square.imaged
        else square.final_state
    )
    holes = square.holes if version >= 1 else []
    refs: dict[str, int] = {}
    collection = z()
    efficient, comparer, array = z(), z(), z()
    entries = "".join(
        _hole_entry(z, plan, grid, square, hole, final=version >= 2, refs=refs) for hole in holes
    )
    return "".join(
        (
            f'<GridSquareXml z:Id="{root_id}" z:Type="Applications.Epu.Persistence.GridSquareXml" z:Assembly="{EPU_ASSEMBLY}" '
            f'xmlns="{NS_EPU}" {ROOT_XMLNS}>',
            id_xml(square.square_id),
            f"<AtlasNodeId>{square.square_id}</AtlasNodeId><AutoEucentricPerformed>{boolean(has_image)}</AutoEucentricPerformed>",
            '<BalancedRank i:nil="true"/><BeamCurrent i:nil="true"/><CategoryName i:nil="true"/><CategoryNumber i:nil="true"/>',
            path,
            shape,
            f'<HolePositionCorrection i:nil="true"/><HoleSpacing>{num(HOLE_SPACING_M)}</HoleSpacing>',
            image,
            '<IsRecommendedSelection i:nil="true"/><IsSmartFindHolesDecisionKnown>false</IsSmartFindHolesDecisionKnown>',
            "<IsSmartHoleDecisionKnown>false</IsSmartHoleDecisionKnown><IsSmartIceThicknessDecisionKnown>false</IsSmartIceThicknessDecisionKnown>",
            f'<Order>{square.order}</Order><Position xmlns:a="{NS_SO}">{stage_xml("a", square.stage)}</Position>',
            f'<RankInsideCategory i:nil="true"/><Rotation>{num(square.rotation)}</Rotation><Selected>{boolean(square.selected)}</Selected>',
            f'<StartDateTime i:nil="true"/><State>{state}</State>',
            f'<TargetLocations z:Id="{collection}" z:Type="Applications.Epu.Persistence.FoilHoleCollectionXml" z:Assembly="{EPU_ASSEMBLY}">',
            id_xml(square.collection_id or square.square_id + 1),
            f'<GridSquareId>{square.square_id}</GridSquareId><TargetLocations i:nil="true" xmlns:a="{NS_ARR}"/>',
            f'<TargetLocationsEfficient z:Id="{efficient}" xmlns:a="{NS_ARR}"><a:m_comparer z:Id="{comparer}" z:Type="{INT_COMPARER}" z:Assembly="0"/>',
            f'<a:m_keyRehashCount>0</a:m_keyRehashCount><a:m_serializationArray z:Id="{array}" z:Size="{len(holes)}" xmlns:b="{NS_GEN}">',
            entries,
            "</a:m_serializationArray><a:m_serializationCapacity>1117</a:m_serializationCapacity>",
            "<a:m_serializationConcurrencyLevel>12</a:m_serializationConcurrencyLevel></TargetLocationsEfficient></TargetLocations>",
            "<Unusable>false</Unusable></GridSquareXml>",
        )
    )


__all__ = [
    "gridsquare_dm",
]
