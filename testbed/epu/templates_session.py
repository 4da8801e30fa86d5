"""``EpuSession.dm``: the EPU session of one grid (presets, acquisition template, grid-square index)."""

from __future__ import annotations

from testbed.epu.dotnet import (
    NS_ARR,
    NS_DMP,
    NS_DRAW,
    NS_EPU,
    NS_FCT,
    NS_GEN,
    NS_MEDIA,
    NS_SO,
    NS_SVC,
    NS_T,
    ROOT_XMLNS,
    ZIds,
    num,
    text,
    timestamp,
)
from testbed.epu.plan import EPU_VERSION, HOLE_SIZE_M, HOLE_SPACING_M, GridPlan, SessionPlan
from testbed.epu.templates_common import (
    AREA_PAIR,
    DMP_ASSEMBLY,
    EPU_ASSEMBLY,
    GS_PAIR,
    INT_COMPARER,
    PRESET_KEYS,
    PRESET_PAIR,
    dictionary_head,
    dm_renderer,
    id_xml,
    version_xml,
)
from testbed.epu.templates_settings import acquisition_settings, optics_settings

# ----------------------------------------------------------------------------------------------------------------
# EpuSession.dm
# ----------------------------------------------------------------------------------------------------------------


def _presets(z: ZIds, grid: GridPlan) -> str:
    """``MicroscopeSettings``: a ``Dictionary`` keyed by experiment-settings id (8 presets)."""
    settings_type = (
        f"Applications.Epu.Datamodel.ExperimentSettingsId, Applications.Epu.Datamodel, Version={EPU_VERSION}, "
        "Culture=neutral, PublicKeyToken=null"
    )
    services_type = (
        "Fei.Applications.Common.Services.MicroscopeSettings, Fei.Applications.Common.Services, Version=5.25.0.6078, "
        "Culture=neutral, PublicKeyToken=null"
    )
    dict_id = z()
    head, _ = dictionary_head(
        z, "", f"System.Collections.Generic.EnumEqualityComparer`1[[{settings_type}]]", None, 80, 17
    )
    pairs_id = z()
    when = timestamp(grid.started)
    pairs = []
    name_ref: int | None = None
    items_ref: int | None = None
    optics = {
        "Atlas": (4.0, -0.001, 8, "LM"),
        "GridSquare": (580.0, -0.00025, 6, "LM"),
        "Hole": (15000.0, -2e-05, 8, "HM"),
        "Acquisition": (165000.0, -2e-06, 5, "HM"),
        "AutoFocus": (165000.0, -2e-06, 5, "HM"),
        "DriftMeasurement": (165000.0, -2e-06, 5, "HM"),
        "ZeroLoss": (165000.0, 0.0, 5, "HM"),
        "ThonRing": (165000.0, -2e-06, 5, "HM"),
    }
    for key in PRESET_KEYS:
        value_id = z()
        acq_id = z()
        body, name_id, items_id = acquisition_settings(
            z, "c", "d", when, name_ref=name_ref, items_ref=items_ref
        )
        # Every other preset shares the camera name object with the previous one (a z:Ref, as in real files).
        name_ref = name_id if name_ref is None else None
        items_ref = items_id
        mag, defocus, spot, lens = optics[key]
        pairs.append(
            f'<{PRESET_PAIR} xmlns="{NS_GEN}"><key>{key}</key><value z:Id="{value_id}" xmlns:b="{NS_SVC}">'
            f'<b:Acquisition z:Id="{acq_id}" xmlns:c="{NS_SO}">{body}</b:Acquisition>'
            f'<b:DisplayName z:Id="{z()}">{key}</b:DisplayName>'
            f'<b:Optics z:Id="{z()}" xmlns:c="{NS_SO}">{optics_settings(z, "c", "d", mag=mag, defocus=defocus, spot=spot, lens=lens)}</b:Optics>'
            f"</value></{PRESET_PAIR}>"
        )
    return (
        f'<MicroscopeSettings z:Id="{dict_id}" z:Type="System.Collections.Generic.Dictionary`2[[{settings_type}],[{services_type}]]" '
        f'z:Assembly="0" xmlns:a="{NS_ARR}">{head}<KeyValuePairs z:Id="{pairs_id}" '
        f'z:Type="System.Collections.Generic.KeyValuePair`2[[{settings_type}],[{services_type}]][]" z:Assembly="0" '
        f'z:Size="{len(PRESET_KEYS)}" xmlns="">{"".join(pairs)}</KeyValuePairs></MicroscopeSettings>'
    )


def _template(z: ZIds, grid: GridPlan, comparer_id: int) -> str:
    """``TargetAreaTemplate``: autofocus area and the acquisition areas (a concurrent dictionary)."""
    template_id, autofocus_id = grid.misc_ids[2], grid.misc_ids[3]
    areas = []
    defocus_ref: int | None = None
    for area in grid.areas:
        value_id = z()
        setting_zid = z()
        if defocus_ref is None:
            defocus_ref = z()
            values = "".join(f"<a:double>{num(v)}</a:double>" for v in grid.defocus_values)
            defocus = f'<Defocus z:Id="{defocus_ref}" z:Type="System.Double[]" z:Assembly="0" z:Size="{len(grid.defocus_values)}">{values}</Defocus>'
        else:
            defocus = f'<Defocus z:Ref="{defocus_ref}" i:nil="true"/>'
        areas.append(
            f'<b:{AREA_PAIR}><b:key>{area.area_id}</b:key><b:value z:Id="{value_id}">{id_xml(area.area_id)}'
            f'<ImageAcquisitionSettingXml z:Id="{setting_zid}">{id_xml(area.setting_id)}{defocus}<ExposureTime>1.7</ExposureTime>'
            f'</ImageAcquisitionSettingXml><ShiftInPixels xmlns:c="{NS_DRAW}"><c:height>{num(area.shift[1])}</c:height>'
            f"<c:width>{num(area.shift[0])}</c:width></ShiftInPixels></b:value></b:{AREA_PAIR}>"
        )
    return (
        f'<TargetAreaTemplate z:Id="{z()}">{id_xml(template_id)}<AutoFocusArea z:Id="{z()}">{id_xml(autofocus_id)}'
        f'<FocusWith z:Id="{z()}">ObjectiveLens</FocusWith><Recurrence z:Id="{z()}">AfterDistance</Recurrence>'
        f'<RecurrenceDistance>8E-06</RecurrenceDistance><ShiftInPixels xmlns:a="{NS_DRAW}"><a:height>-1306.46558</a:height>'
        f"<a:width>-456.4362</a:width></ShiftInPixels><UseAutoStigmate>false</UseAutoStigmate></AutoFocusArea>"
        f'<AutoplaceAutofocus>true</AutoplaceAutofocus><DataAcquisitionAreas z:Id="{z()}" xmlns:a="{NS_ARR}">'
        f'<a:m_comparer z:Ref="{comparer_id}" i:nil="true"/><a:m_keyRehashCount>0</a:m_keyRehashCount>'
        f'<a:m_serializationArray z:Id="{z()}" z:Size="{len(grid.areas)}" xmlns:b="{NS_GEN}">{"".join(areas)}</a:m_serializationArray>'
        f"<a:m_serializationCapacity>31</a:m_serializationCapacity><a:m_serializationConcurrencyLevel>12</a:m_serializationConcurrencyLevel>"
        f"</DataAcquisitionAreas><DelayAfterImageShift>0.5</DelayAfterImageShift><DelayAfterStageShift>5</DelayAfterStageShift>"
        f'<DriftStabilizationArea i:nil="true"/><MaximumImageShift>5E-06</MaximumImageShift>'
        f'<PhysicalTransformation xmlns:a="{NS_SO}"><a:matrix xmlns:b="{NS_MEDIA}"><b:_m11>-1.0547074550851703E-09</b:_m11>'
        f"<b:_m12>-5.0621842104867353E-11</b:_m12><b:_m21>-5.0621842104867417E-11</b:_m21><b:_m22>1.0547074550851703E-09</b:_m22>"
        f"<b:_offsetX>0</b:_offsetX><b:_offsetY>0</b:_offsetY><b:_padding>0</b:_padding><b:_type>TRANSFORM_IS_UNKNOWN</b:_type></a:matrix>"
        f'<a:unit xmlns:b="{NS_FCT}"><b:_x003C_PrefixExponent_x003E_k__BackingField>1</b:_x003C_PrefixExponent_x003E_k__BackingField>'
        f'<b:_x003C_Symbol_x003E_k__BackingField z:Id="{z()}">m</b:_x003C_Symbol_x003E_k__BackingField></a:unit></PhysicalTransformation>'
        f'<TemplateImagePixelSize xmlns:a="{NS_DRAW}"><a:height>2.11184314E-09</a:height><a:width>2.11184314E-09</a:width>'
        f"</TemplateImagePixelSize></TargetAreaTemplate>"
    )


def _filter_settings(z: ZIds, tag: str, settings_id: int, *, holes: bool) -> str:
    extra = (
        f"<HoleSize>{num(HOLE_SIZE_M)}</HoleSize><HoleSpacing>{num(HOLE_SPACING_M)}</HoleSpacing><Rotation>3.0671749626142644</Rotation>"
        if holes
        else ""
    )
    maximum, minimum = ("1020.8035714285713", "534.077380952381") if holes else ("65535", "0")
    return (
        f'<{tag} z:Id="{z()}">{id_xml(settings_id)}<I0>0</I0><IsCalibrated>false</IsCalibrated>'
        f"<MaximumIntensity>{maximum}</MaximumIntensity><MinimumIntensity>{minimum}</MinimumIntensity>"
        f'<ReferenceBeamCurrent i:nil="true"/><SmartIceThicknessMaximumIntensity>0</SmartIceThicknessMaximumIntensity>'
        f"<SmartIceThicknessMinimumIntensity>0</SmartIceThicknessMinimumIntensity>{extra}</{tag}>"
    )


@dm_renderer
def epu_session(plan: SessionPlan, grid: GridPlan, *, final: bool) -> str:
    """``EpuSession.dm`` of ``grid``; ``final`` sets the sample's ``EndDateTime`` (the last rewrite)."""
    z = ZIds()
    root_id = z()
    parts = [
        f'<EpuSessionXml z:Id="{root_id}" z:Type="Applications.Epu.Persistence.EpuSessionXml" z:Assembly="{EPU_ASSEMBLY}" '
        f'xmlns="{NS_EPU}" {ROOT_XMLNS}>',
        id_xml(grid.session_id),
        "<AutoFocusEnabled>false</AutoFocusEnabled><AutoStageTimeEnabled>false</AutoStageTimeEnabled>",
        "<AutoZeroLossEnabled>false</AutoZeroLossEnabled><AutoZeroLossPeriodicity>PT1H</AutoZeroLossPeriodicity>",
        f'<AutoloaderDescription z:Id="{z()}">{text(grid.atlas.sample_name)}</AutoloaderDescription>',
        f"<AutoloaderSlot>{grid.atlas.slot}</AutoloaderSlot>",
        "<ClusteringMode>NoClustering</ClusteringMode><ClusteringRadius>0</ClusteringRadius>",
    ]
    dmp = z()
    empty = z()
    refs = "".join(
        f'<{name} z:Ref="{empty}" i:nil="true"/>'
        for name in (
            "DatasetId",
            "DatasetName",
            "ExperimentId",
            "ExperimentName",
            "ProjectId",
            "ProjectName",
            "WorkflowId",
            "WorkflowName",
            "WorkstepId",
            "WorkstepName",
        )
    )
    parts.append(
        f'<DMPSession z:Id="{dmp}" z:Type="{NS_DMP.rsplit("/", 1)[1]}.DMPSessionXml" z:Assembly="{DMP_ASSEMBLY}">'
        f'<AcquisitionRunId z:Id="{empty}"/>{refs}</DMPSession>'
    )
    name_id_placeholder = "{NAME_ID}"
    parts.append(
        f'<DoseFractionsOutputFormat z:Id="{z()}">Tiff Lzw Non-Gain normalized</DoseFractionsOutputFormat>'
    )
    parts.append(
        "<EmailNotificationEnabled>false</EmailNotificationEnabled><EnableSmartHoleSelection>false</EnableSmartHoleSelection>"
        "<IceThicknessEnabled>false</IceThicknessEnabled><ImageFileFormat>Tiff</ImageFileFormat>"
        "<IsManuallySelected>false</IsManuallySelected><IsSmartFilterGridSquareDecisionKnown>false</IsSmartFilterGridSquareDecisionKnown>"
        '<MicroscopeName i:nil="true"/>'
    )
    name_zid = z()
    parts.append(f'<Name z:Id="{name_zid}">{text(grid.session_name)}</Name>')
    del name_id_placeholder
    parts.append(
        '<NumberOfTargetLocationsToSelect i:nil="true"/><PhasePlateAccelerateEnabled>false</PhasePlateAccelerateEnabled>'
        "<PhasePlateActivationTime>PT20S</PhasePlateActivationTime><PhasePlateEnabled>false</PhasePlateEnabled>"
        '<PhasePlatePeriodicity>50</PhasePlatePeriodicity><RecipientsEmailList i:nil="true"/>'
        "<RemoveHolesCloseToGridBarOnAutomaticRun>true</RemoveHolesCloseToGridBarOnAutomaticRun>"
    )
    # Samples: a List<SampleXml> with capacity 4 and one real item (nil padding after it).
    samples_id, items_id, sample_zid = z(), z(), z()
    comparer_id_holder: list[int] = []
    squares = []
    gs_dict, comparer, array = z(), z(), z()
    comparer_id_holder.append(comparer)
    for square in grid.squares:
        value_id, file_id = z(), z()
        squares.append(
            f'<b:{GS_PAIR}><b:key>{square.square_id}</b:key><b:value z:Id="{value_id}" xmlns:c="{NS_T}">'
            f'<c:FileName z:Id="{file_id}">Metadata\\GridSquare_{square.square_id}.dm</c:FileName></b:value></b:{GS_PAIR}>'
        )
    end = f"<EndDateTime>{timestamp(grid.ended)}</EndDateTime>" if final else '<EndDateTime i:nil="true"/>'
    sample = (
        f'<SampleXml z:Id="{sample_zid}">{id_xml(grid.sample_xml_id)}'
        f"<AlignmentTimeStamp>{timestamp(grid.started)}</AlignmentTimeStamp>"
        "<AllowDarkFoilHolesOnGridSquareMagnification>false</AllowDarkFoilHolesOnGridSquareMagnification>"
        f'<AtlasId z:Id="{z()}">{text(grid.atlas_windows_path)}</AtlasId>{end}'
        + _filter_settings(z, "FilterGridSquaresSettings", grid.misc_ids[0], holes=False)
        + _filter_settings(z, "FilterHolesSettings", grid.misc_ids[1], holes=True)
        + "<GridGeometry>Square</GridGeometry>"
        f'<GridSquares z:Id="{gs_dict}" xmlns:a="{NS_ARR}"><a:m_comparer z:Id="{comparer}" z:Type="{INT_COMPARER}" z:Assembly="0"/>'
        f'<a:m_keyRehashCount>0</a:m_keyRehashCount><a:m_serializationArray z:Id="{array}" z:Size="{len(grid.squares)}" '
        f'xmlns:b="{NS_GEN}">{"".join(squares)}</a:m_serializationArray>'
        f"<a:m_serializationCapacity>1117</a:m_serializationCapacity><a:m_serializationConcurrencyLevel>384</a:m_serializationConcurrencyLevel>"
        "</GridSquares><GridType>HoleyCarbon</GridType>"
        + _presets(z, grid)
        + f'<SpecimenCarrierKind i:nil="true"/><StartDateTime>{timestamp(grid.started)}</StartDateTime>'
        + _template(z, grid, comparer)
        + "</SampleXml>"
    )
    parts.append(
        f'<Samples z:Id="{samples_id}"><_items z:Id="{items_id}" z:Size="4">{sample}'
        + '<SampleXml i:nil="true"/>' * 3
        + "</_items><_size>1</_size><_version>1</_version></Samples>"
    )
    parts.append(
        "<SkipGridSquareEnabled>false</SkipGridSquareEnabled><SmartGridSquareEnabled>false</SmartGridSquareEnabled>"
        f"<StartDateTime>{timestamp(grid.started, utc=True)}</StartDateTime>"
    )
    folders_id, folder_items, folder_zid = z(), z(), z()
    parts.append(
        f'<StorageFolders z:Id="{folders_id}"><_items z:Id="{folder_items}" z:Size="4"><StorageFolderXml z:Id="{folder_zid}">'
        f'{id_xml(grid.storage_folder_id)}<DiscId>1</DiscId><Path z:Id="{z()}">{text(plan.storage_windows)}</Path>'
        f'<SessionName z:Ref="{name_zid}" i:nil="true"/></StorageFolderXml>'
        + '<StorageFolderXml i:nil="true"/>' * 3
        + "</_items><_size>1</_size><_version>1</_version></StorageFolders>"
    )
    parts.append(version_xml(z, "a", 0))
    parts.append("</EpuSessionXml>")
    return "".join(parts)


__all__ = [
    "epu_session",
]
