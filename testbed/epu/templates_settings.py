"""The acquisition and optics settings blocks that ``EpuSession.dm`` presets and ``Atlas.dm`` files share."""

from __future__ import annotations

from testbed.epu.dotnet import NS_ARR, NS_DRAW, NS_FT, NS_GEN, OBJECT, STRING, ZIds, num
from testbed.epu.plan import CAMERA_NAME, READOUT_H, READOUT_W
from testbed.epu.templates_common import STRING_COMPARER, dictionary_head

# ----------------------------------------------------------------------------------------------------------------
# Shared settings blocks (acquisition / optics settings inside .dm files)
# ----------------------------------------------------------------------------------------------------------------


def acquisition_settings(
    z: ZIds,
    p: str,
    d: str,
    when: str,
    *,
    name_ref: int | None,
    items_ref: int | None,
    arr: str | None = None,
    bare: bool = False,
) -> tuple[str, int, int]:
    """An ``so:Acquisition`` settings body in prefix ``p`` (child prefix ``d``); returns (xml, name id, items id).

    The camera name and the empty detector list are written in full at their first occurrence in a file and as
    ``z:Ref`` afterwards, which is how real ``EpuSession.dm`` and ``Atlas.dm`` files share them.
    """
    if items_ref is None:
        items_id = z()
        items = f'<{p}:_items z:Id="{items_id}" z:Size="0"/>'
    else:
        items_id = items_ref
        items = f'<{p}:_items z:Ref="{items_ref}" i:nil="true"/>'
    analytical = f'<{p}:analyticalDetectors z:Id="{z()}">{items}<{p}:_size>0</{p}:_size><{p}:_version>0</{p}:_version></{p}:analyticalDetectors>'
    camera_id = z()
    dict_id = z()
    entries = (
        ()
        if bare
        else (
            ("ElectronCountingEnabled", "System.Boolean", "true"),
            ("SuperResolutionFactor", "System.Int32", "1"),
            ("FixedReadoutArea", "System.String", "Full"),
        )
    )
    head, _ = dictionary_head(z, "", STRING_COMPARER, None, len(entries), len(entries))
    kvs = []
    for key, type_name, value in entries:
        kvs.append(
            f'<KeyValuePairOfstringanyType xmlns="{NS_GEN}"><key z:Id="{z()}">{key}</key>'
            f'<value z:Id="{z()}" z:Type="{type_name}" z:Assembly="0">{value}</value></KeyValuePairOfstringanyType>'
        )
    arr_decl = f' xmlns:{arr}="{NS_ARR}"' if arr else ""
    # An empty .NET Dictionary is serialised without its KeyValuePairs element (as in ScreeningSession.dm).
    pairs = (
        f'<KeyValuePairs z:Id="{z()}" z:Type="System.Collections.Generic.KeyValuePair`2[[{STRING}],[{OBJECT}]][]" '
        f'z:Assembly="0" z:Size="{len(kvs)}" xmlns="">{"".join(kvs)}</KeyValuePairs>'
        if kvs
        else ""
    )
    specific = (
        f'<{p}:CameraSpecificInput z:Id="{dict_id}" z:Type="System.Collections.Generic.Dictionary`2[[{STRING}],[{OBJECT}]]" '
        f'z:Assembly="0"{arr_decl}>{head}{pairs}</{p}:CameraSpecificInput>'
    )
    if name_ref is None:
        name_id = z()
        name = f'<{p}:Name z:Id="{name_id}">{CAMERA_NAME}</{p}:Name>'
    else:
        name_id = name_ref
        name = f'<{p}:Name z:Ref="{name_ref}" i:nil="true"/>'
    camera = (
        f'<{p}:camera z:Id="{camera_id}"><{p}:Binning xmlns:{d}="{NS_DRAW}"><{d}:x>2</{d}:x><{d}:y>2</{d}:y></{p}:Binning>'
        f"<{p}:CameraLocation>EnergyFilter</{p}:CameraLocation>{specific}<{p}:DarkGainCorrection>None</{p}:DarkGainCorrection>"
        f"<{p}:ExposureTime>1</{p}:ExposureTime><{p}:Inserted>false</{p}:Inserted>{name}"
        f"<{p}:PreExposurePauseTime>0</{p}:PreExposurePauseTime><{p}:PreExposureSupported>false</{p}:PreExposureSupported>"
        f'<{p}:PreExposureTime>0</{p}:PreExposureTime><{p}:ReadoutArea xmlns:{d}="{NS_DRAW}"><{d}:height>{READOUT_H}</{d}:height>'
        f"<{d}:width>{READOUT_W}</{d}:width><{d}:x>0</{d}:x><{d}:y>0</{d}:y></{p}:ReadoutArea><{p}:Shutter>PreSpecimen</{p}:Shutter></{p}:camera>"
    )
    rest = (
        f'<{p}:plateCamera z:Id="{z()}"><{p}:ExposureTime>0</{p}:ExposureTime><{p}:Use>false</{p}:Use></{p}:plateCamera>'
        f'<{p}:scanSettings z:Id="{z()}"><{p}:DwellTime>0</{p}:DwellTime><{p}:ReducedArea i:nil="true" xmlns:{d}="{NS_DRAW}"/>'
        f'<{p}:Resolution xmlns:{d}="{NS_DRAW}"><{d}:height>0</{d}:height><{d}:width>0</{d}:width></{p}:Resolution>'
        f'<{p}:ScanArea xmlns:{d}="{NS_DRAW}"><{d}:height>0</{d}:height><{d}:width>0</{d}:width><{d}:x>0</{d}:x><{d}:y>0</{d}:y></{p}:ScanArea>'
        f"<{p}:ScanRotation>0</{p}:ScanRotation></{p}:scanSettings>"
        f'<{p}:scanningDetector z:Id="{z()}"><{p}:DetectorType>SecondaryElectrons</{p}:DetectorType><{p}:Gain i:nil="true"/>'
        f'<{p}:Inserted>false</{p}:Inserted><{p}:Name i:nil="true"/><{p}:Offset i:nil="true"/></{p}:scanningDetector>'
    )
    return (
        f"<{p}:acquisitionDateTime>{when}</{p}:acquisitionDateTime>{analytical}{camera}{rest}",
        name_id,
        items_id,
    )


def optics_settings(
    z: ZIds, p: str, d: str, *, mag: float, defocus: float, spot: int, lens: str, bare: bool = False
) -> str:
    """An ``so:Optics`` body in prefix ``p`` with vectors in prefix ``d`` (``Fei.Types``); ``bare``: no apertures."""
    vec = f"<{d}:_x>0</{d}:_x><{d}:_y>0</{d}:_y>"
    apertures = (
        f'<{p}:Apertures i:nil="true"/>'
        if bare
        else (
            f'<{p}:Apertures z:Id="{z()}"><{p}:C2Aperture z:Id="{z()}"><{p}:Diameter>50</{p}:Diameter></{p}:C2Aperture>'
            f'<{p}:C3Aperture i:nil="true"/><{p}:SaAperture i:nil="true"/></{p}:Apertures>'
        )
    )
    energy_filter = (
        f'<{p}:EnergyFilter i:nil="true"/>'
        if bare
        else (
            f'<{p}:EnergyFilter z:Id="{z()}"><{p}:AccelerationVoltageOffset i:nil="true"/>'
            f"<{p}:DriftTubeVoltage>0</{p}:DriftTubeVoltage><{p}:EnergySelectionSlitInserted>false</{p}:EnergySelectionSlitInserted>"
            f"<{p}:EnergySelectionSlitWidth>20</{p}:EnergySelectionSlitWidth><{p}:EnergyShift>0</{p}:EnergyShift>"
            f'<{p}:EntranceApertureDiameter i:nil="true"/><{p}:EntranceApertureType i:nil="true"/></{p}:EnergyFilter>'
        )
    )
    return (
        f'{apertures}<{p}:BeamConvergence i:nil="true"/>'
        f'<{p}:BeamDiameter>0.0009</{p}:BeamDiameter><{p}:BeamShift xmlns:{d}="{NS_FT}">{vec}</{p}:BeamShift>'
        f'<{p}:BeamTilt xmlns:{d}="{NS_FT}">{vec}</{p}:BeamTilt><{p}:Cameralength>0</{p}:Cameralength>'
        f"<{p}:ColumnOperatingMode>TEM</{p}:ColumnOperatingMode><{p}:ColumnOperatingTemSubMode>BrightField</{p}:ColumnOperatingTemSubMode>"
        f'<{p}:CondenserStigmator xmlns:{d}="{NS_FT}">{vec}</{p}:CondenserStigmator><{p}:Defocus>{num(defocus)}</{p}:Defocus>'
        f'<{p}:DiffractionFocus>0</{p}:DiffractionFocus><{p}:DiffractionShift xmlns:{d}="{NS_FT}">{vec}</{p}:DiffractionShift>'
        f'<{p}:DiffractionStigmator xmlns:{d}="{NS_FT}">{vec}</{p}:DiffractionStigmator><{p}:EFTEMOn>true</{p}:EFTEMOn>'
        f"{energy_filter}"
        f'<{p}:Focus>0</{p}:Focus><{p}:GunStigmator i:nil="true" xmlns:{d}="{NS_FT}"/><{p}:IlluminationMode i:nil="true"/>'
        f'<{p}:IlluminationProbeSubMode i:nil="true"/><{p}:ImageShift xmlns:{d}="{NS_FT}">{vec}</{p}:ImageShift>'
        f"<{p}:Intensity>0</{p}:Intensity><{p}:ObjectiveLensMode>{lens}</{p}:ObjectiveLensMode>"
        f'<{p}:ObjectiveStigmator xmlns:{d}="{NS_FT}">{vec}</{p}:ObjectiveStigmator><{p}:ProbeMode>MicroProbe</{p}:ProbeMode>'
        f"<{p}:ProjectorMode>Imaging</{p}:ProjectorMode><{p}:SpotIndex>{spot}</{p}:SpotIndex><{p}:StemDefocus>0</{p}:StemDefocus>"
        f'<{p}:StemFieldOfView i:nil="true"/><{p}:StemMagnification i:nil="true"/>'
        f"<{p}:TemMagnification><{p}:NominalMagnification>{num(mag)}</{p}:NominalMagnification></{p}:TemMagnification>"
        f"{'' if bare else f'<{p}:XLModeOn>false</{p}:XLModeOn>'}"
    )


__all__ = [
    "acquisition_settings",
    "optics_settings",
]
