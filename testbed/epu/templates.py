"""Render the files of a :class:`~testbed.epu.plan.SessionPlan` as EPU writes them.

Every ``.dm`` and image XML is produced here from our own templates, following the structure documented in
epu-format.md sections 4 and 6: single-line .NET ``DataContractSerializer`` output with no declaration, the real
namespace URIs, prefixes allocated per nesting level as the serializer does (so the same namespace is ``a:`` in
one place and ``c:`` or ``d:`` in another), ``z:Id``/``z:Ref`` object references, ``List<T>`` internals
(``_items`` with nil padding up to the capacity, ``_size``), concurrent dictionaries (``m_serializationArray``) and
plain dictionaries (no-namespace ``Version``/``Comparer``/``HashSize``/``KeyValuePairs``).

Rendering is plain string building: the ``large`` preset writes about 100k files and must stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec

from testbed.epu.dotnet import (
    INT32,
    MSCORLIB,
    NS_AA,
    NS_ARR,
    NS_DMP,
    NS_DRAW,
    NS_EPU,
    NS_FCT,
    NS_FT,
    NS_GA,
    NS_GAD,
    NS_GEN,
    NS_MEDIA,
    NS_OMP,
    NS_SAT,
    NS_SCR,
    NS_SO,
    NS_SVC,
    NS_SYS,
    NS_T,
    NS_XS,
    OBJECT,
    ROOT_XMLNS,
    STRING,
    ZIds,
    boolean,
    num,
    renumber_zids,
    text,
    timestamp,
)
from testbed.epu.plan import (
    CAMERA_NAME,
    COMPUTER_NAME,
    DETECTOR_COMMERCIAL_NAME,
    EPU_VERSION,
    GRIDATLAS_VERSION,
    HOLE_SIZE_M,
    HOLE_SPACING_M,
    INSTRUMENT_ID,
    INSTRUMENT_MODEL,
    READOUT_H,
    READOUT_W,
    TEMAPP_VERSION,
    AtlasPlan,
    FoilHolePlan,
    GridPlan,
    GridSquarePlan,
    ImagePlan,
    SessionPlan,
    Stage,
    TilePlan,
)

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


def _dm(render: Callable[_P, str]) -> Callable[_P, str]:
    """Mark a ``.dm`` renderer: its output gets ``z:Id`` numbering in document order."""

    @wraps(render)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> str:
        return renumber_zids(render(*args, **kwargs))

    return wrapper


def _id(value: int) -> str:
    """``<Id>`` in the common-types namespace, declared as the default namespace (as EPU writes it)."""
    return f"{_T_ID}{value}</Id>"


def _xy(p: str, x: float, y: float) -> str:
    return f"<{p}:x>{num(x)}</{p}:x><{p}:y>{num(y)}</{p}:y>"


def _stage(p: str, s: Stage, *, with_ab: bool = True) -> str:
    """A stage position's children in prefix ``p`` (A, B, X, Y, Z: alphabetical, as serialised)."""
    ab = f"<{p}:A>{num(s.a)}</{p}:A><{p}:B>{num(s.b)}</{p}:B>" if with_ab else ""
    return f"{ab}<{p}:X>{num(s.x)}</{p}:X><{p}:Y>{num(s.y)}</{p}:Y><{p}:Z>{num(s.z)}</{p}:Z>"


def _dictionary_head(
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


# ----------------------------------------------------------------------------------------------------------------
# MicroscopeImage (grid-square, foil-hole, micrograph, tile and stitched atlas images)
# ----------------------------------------------------------------------------------------------------------------

_KV = (
    '<a:KeyValueOfstringanyType><a:Key>{key}</a:Key><a:Value i:type="b:{type}" xmlns:b="'
    + NS_XS
    + '">{value}</a:Value></a:KeyValueOfstringanyType>'
)
_UNIT = f'<unit xmlns:a="{NS_FCT}"><a:_x003C_PrefixExponent_x003E_k__BackingField>1</a:_x003C_PrefixExponent_x003E_k__BackingField><a:_x003C_Symbol_x003E_k__BackingField>m</a:_x003C_Symbol_x003E_k__BackingField></unit>'
_VEC0 = "<a:_x>0</a:_x><a:_y>0</a:_y>"


def _kv(key: str, type_: str, value: str) -> str:
    return _KV.format(key=key, type=type_, value=value)


def _custom_data(image: ImagePlan, kind: str) -> str:
    if kind == "atlas":
        return (
            f'<CustomData xmlns:a="{NS_ARR}">'
            + _kv("NumberOfTilesPlanned", "int", str(int(image.dose)))
            + _kv("AppliedDefocus", "double", num(image.applied_defocus_m))
            + _kv("NumberOfTilesAcquired", "int", str(int(image.dose)))
            + "</CustomData>"
        )
    aperture_obj = "100" if kind in ("micrograph", "foilhole") else "None"
    parts = [
        f'<CustomData xmlns:a="{NS_ARR}">',
        _kv("DoseOnCamera", "double", num(image.dose_on_camera)),
        _kv("StemMagnification", "boolean", "false"),
        _kv("Aperture[C1].Name", "string", "2000"),
        _kv("Aperture[C2].Name", "string", "50"),
        _kv("Aperture[C3].Name", "string", "None"),
        _kv("Aperture[OBJ].Name", "string", aperture_obj),
        _kv("Aperture[SA].Name", "string", "None"),
        _kv(f"Detectors[{CAMERA_NAME}].CommercialName", "string", DETECTOR_COMMERCIAL_NAME),
        _kv(f"Detectors[{CAMERA_NAME}].ElectronCounted", "boolean", "true"),
        _kv("DoseRate", "double", num(image.dose_on_camera / image.exposure_time_s)),
        _kv("IlluminationIntensity", "double", "0"),
        _kv("Dose", "double", num(image.dose)),
        _kv("PhasePlateUsed", "boolean", "false"),
        _kv("BinaryResult.Detector", "string", CAMERA_NAME),
        _kv("DetectorCommercialName", "string", DETECTOR_COMMERCIAL_NAME),
    ]
    if image.found_center is not None and image.found_size is not None:
        parts.append(
            "<a:KeyValueOfstringanyType><a:Key>FindFoilHoleCenterResults</a:Key>"
            f'<a:Value i:type="b:Shape2D" xmlns:b="{NS_FT}">'
            f'<b:Center xmlns:c="{NS_DRAW}">{_xy("c", *image.found_center)}</b:Center>'
            f"<b:Quality>{num(image.found_quality or 0.0)}</b:Quality><b:Rotation>0</b:Rotation><b:Shear>0</b:Shear>"
            f'<b:Size xmlns:c="{NS_DRAW}"><c:height>{num(image.found_size)}</c:height>'
            f"<c:width>{num(image.found_size)}</c:width></b:Size></a:Value></a:KeyValueOfstringanyType>"
        )
    parts.append(_kv("AppliedDefocus", "double", num(image.applied_defocus_m)))
    parts.append("</CustomData>")
    return "".join(parts)


def _camera_specific(kind: str) -> str:
    fractionation = (
        f'<a:Value i:type="b:EquidistantFractionation" xmlns:b="{NS_OMP}"><b:NumberOffractions>50</b:NumberOffractions></a:Value>'
        if kind == "micrograph"
        else '<a:Value i:nil="true"/>'
    )
    return (
        f'<CameraSpecificInput xmlns:a="{NS_ARR}">'
        + _kv("AlignIntegratedImageEnabled", "boolean", "false")
        + _kv("SuperResolutionFactor", "int", "2" if kind == "micrograph" else "1")
        + f"<a:KeyValueOfstringanyType><a:Key>FractionationSettings</a:Key>{fractionation}</a:KeyValueOfstringanyType>"
        + _kv("ElectronCountingEnabled", "boolean", "true")
        + _kv("ApplyDefinedShutter", "boolean", "true")
        + _kv("CetaFramesSummed", "int", "1")
        + _kv("CetaNoiseReductionEnabled", "boolean", "false")
        + _kv("FixedReadoutArea", "string", "Full")
        + "</CameraSpecificInput>"
    )


_IMAGE_KIND_SETTINGS = {
    # kind: (software, version, binning, lens mode, probe mode, spot, beam diameter, slit inserted, slit width)
    "micrograph": ("EPU", EPU_VERSION, 2, "HM", "NanoProbe", 5, "4.9012049315983373E-07", True, 10),
    "foilhole": ("EPU", EPU_VERSION, 2, "HM", "MicroProbe", 8, "1.1E-05", False, 50),
    "gridsquare": ("EPU", EPU_VERSION, 2, "LM", "MicroProbe", 6, "0.0003", False, 50),
    "tile": ("TemAppCommon", TEMAPP_VERSION, 2, "LM", "MicroProbe", 8, "0.0009", False, 50),
    "atlas": ("TemAppCommon", TEMAPP_VERSION, 2, "LM", "MicroProbe", 8, "0.0009", False, 50),
}


def microscope_image(image: ImagePlan, kind: str) -> str:
    """A ``MicroscopeImage`` XML (no ``z:Id`` in image XMLs, as in every real sample)."""
    software, version, binning, lens, probe, spot, beam_diameter, slit, slit_width = _IMAGE_KIND_SETTINGS[
        kind
    ]
    px = num(image.pixel_size_m)
    m11 = num(image.pixel_size_m * 0.9983)
    m12 = num(-image.pixel_size_m * 0.0573)
    s = image.stage
    return "".join(
        (
            f'<MicroscopeImage xmlns="{NS_SO}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">',
            f"<name>Empty</name><uniqueID>{image.unique_id}</uniqueID>",
            _custom_data(image, kind),
            '<IntensityScale i:nil="true"/>',
            f'<ReferenceTransformation><matrix xmlns:a="{NS_MEDIA}"><a:_m11>-{m11}</a:_m11><a:_m12>{m12}</a:_m12>'
            f"<a:_m21>{m12}</a:_m21><a:_m22>{m11}</a:_m22><a:_offsetX>0</a:_offsetX><a:_offsetY>0</a:_offsetY>"
            f"<a:_padding>0</a:_padding><a:_type>TRANSFORM_IS_UNKNOWN</a:_type></matrix>{_UNIT}</ReferenceTransformation>",
            f"<SpatialScale><offset><x><numericValue>0</numericValue>{_UNIT}</x><y><numericValue>0</numericValue>{_UNIT}</y></offset>",
            f"<pixelSize><x><numericValue>{px}</numericValue>{_UNIT}</x><y><numericValue>{px}</numericValue>{_UNIT}</y></pixelSize></SpatialScale>",
            f"<microscopeData><acquisition><acquisitionDateTime>{timestamp(image.acquired)}</acquisitionDateTime>",
            f'<analyticalDetectors/><camera><Binning xmlns:a="{NS_DRAW}"><a:x>{binning}</a:x><a:y>{binning}</a:y></Binning>',
            "<CameraLocation>EnergyFilter</CameraLocation>",
            _camera_specific(kind),
            f"<DarkGainCorrection>None</DarkGainCorrection><ExposureTime>{num(image.exposure_time_s)}</ExposureTime>",
            f"<Inserted>true</Inserted><Name>{CAMERA_NAME}</Name><PreExposurePauseTime>0</PreExposurePauseTime>",
            "<PreExposureSupported>false</PreExposureSupported><PreExposureTime>0</PreExposureTime>",
            f'<ReadoutArea xmlns:a="{NS_DRAW}"><a:height>{READOUT_H}</a:height><a:width>{READOUT_W}</a:width><a:x>0</a:x><a:y>0</a:y></ReadoutArea>',
            "<Shutter>PreSpecimen</Shutter></camera><plateCamera><ExposureTime>0</ExposureTime><Use>false</Use></plateCamera>",
            f'<scanSettings><DwellTime>0</DwellTime><ReducedArea i:nil="true" xmlns:a="{NS_DRAW}"/>',
            f'<Resolution xmlns:a="{NS_DRAW}"><a:height>0</a:height><a:width>0</a:width></Resolution>',
            f'<ScanArea xmlns:a="{NS_DRAW}"><a:height>0</a:height><a:width>0</a:width><a:x>0</a:x><a:y>0</a:y></ScanArea>',
            "<ScanRotation>0</ScanRotation></scanSettings><scanningDetector><DetectorType>SecondaryElectrons</DetectorType>",
            '<Gain i:nil="true"/><Inserted>false</Inserted><Name i:nil="true"/><Offset i:nil="true"/></scanningDetector></acquisition>',
            f"<core><ApplicationSoftware>{software}</ApplicationSoftware><ApplicationSoftwareVersion>{version}</ApplicationSoftwareVersion>",
            f"<Guid>{image.core_guid}</Guid></core>",
            "<gun><AccelerationVoltage>300000</AccelerationVoltage><ExtractorVoltage>4250</ExtractorVoltage>",
            '<Filament i:nil="true"/><GunLens>4</GunLens><Sourcetype>FieldEmission</Sourcetype><WehneltBias i:nil="true"/></gun>',
            '<instrument><AcquisitionSoftware i:nil="true"/><AcquisitionSoftwareVersion i:nil="true"/>',
            f"<ComputerName>{COMPUTER_NAME}</ComputerName><InstrumentID>{INSTRUMENT_ID}</InstrumentID>",
            f"<InstrumentModel>{INSTRUMENT_MODEL}</InstrumentModel></instrument>",
            f'<optics><Apertures i:nil="true"/><BeamConvergence i:nil="true"/><BeamDiameter>{beam_diameter}</BeamDiameter>',
            f'<BeamShift xmlns:a="{NS_FT}"><a:_x>{num(image.beam_shift[0])}</a:_x><a:_y>{num(image.beam_shift[1])}</a:_y></BeamShift>',
            f'<BeamTilt xmlns:a="{NS_FT}"><a:_x>0.011545443907380104</a:_x><a:_y>-0.012739625759422779</a:_y></BeamTilt>',
            "<Cameralength>0</Cameralength><ColumnOperatingMode>TEM</ColumnOperatingMode>",
            f'<ColumnOperatingTemSubMode>BrightField</ColumnOperatingTemSubMode><CondenserStigmator xmlns:a="{NS_FT}">{_VEC0}</CondenserStigmator>',
            f"<Defocus>{num(image.defocus_m)}</Defocus><DiffractionFocus>0</DiffractionFocus>",
            f'<DiffractionShift xmlns:a="{NS_FT}">{_VEC0}</DiffractionShift><DiffractionStigmator xmlns:a="{NS_FT}">{_VEC0}</DiffractionStigmator>',
            "<EFTEMOn>true</EFTEMOn><EnergyFilter><AccelerationVoltageOffset>0</AccelerationVoltageOffset><DriftTubeVoltage>0</DriftTubeVoltage>",
            f"<EnergySelectionSlitInserted>{boolean(slit)}</EnergySelectionSlitInserted><EnergySelectionSlitWidth>{slit_width}</EnergySelectionSlitWidth>",
            '<EnergyShift>0</EnergyShift><EntranceApertureDiameter i:nil="true"/><EntranceApertureType i:nil="true"/></EnergyFilter>',
            f'<Focus>0</Focus><GunStigmator i:nil="true" xmlns:a="{NS_FT}"/><IlluminationMode>Parallel</IlluminationMode>',
            f'<IlluminationProbeSubMode i:nil="true"/><ImageShift xmlns:a="{NS_FT}"><a:_x>{num(image.image_shift[0])}</a:_x>',
            f"<a:_y>{num(image.image_shift[1])}</a:_y></ImageShift><Intensity>0</Intensity><ObjectiveLensMode>{lens}</ObjectiveLensMode>",
            f'<ObjectiveStigmator xmlns:a="{NS_FT}">{_VEC0}</ObjectiveStigmator><ProbeMode>{probe}</ProbeMode>',
            f"<ProjectorMode>Imaging</ProjectorMode><SpotIndex>{spot}</SpotIndex><StemDefocus>0</StemDefocus>",
            '<StemFieldOfView i:nil="true"/><StemMagnification i:nil="true"/>',
            f"<TemMagnification><NominalMagnification>{num(image.magnification)}</NominalMagnification></TemMagnification></optics>",
            '<sample><Description i:nil="true"/><ID i:nil="true"/></sample>',
            f"<stage><Holder>Unspecified</Holder><Position><A>{num(s.a)}</A><B>{num(s.b)}</B><X>{num(s.x)}</X><Y>{num(s.y)}</Y><Z>{num(s.z)}</Z></Position>",
            "<SampleLoader>None</SampleLoader></stage><vacuum><ProjectionChamberPressure>0</ProjectionChamberPressure>",
            "<SamplePressure>0</SamplePressure><VacuumMode>Ready</VacuumMode></vacuum></microscopeData></MicroscopeImage>",
        )
    )


# ----------------------------------------------------------------------------------------------------------------
# Shared settings blocks (acquisition / optics settings inside .dm files)
# ----------------------------------------------------------------------------------------------------------------


def _acquisition_settings(
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
    head, _ = _dictionary_head(z, "", STRING_COMPARER, None, len(entries), len(entries))
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


def _optics(
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


def _version(z: ZIds, p: str, revision: int) -> str:
    return (
        f'<Version z:Id="{z()}" xmlns:{p}="{NS_SYS}"><{p}:_Build>0</{p}:_Build><{p}:_Major>3</{p}:_Major>'
        f"<{p}:_Minor>0</{p}:_Minor><{p}:_Revision>{revision}</{p}:_Revision></Version>"
    )


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
    head, _ = _dictionary_head(
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
        body, name_id, items_id = _acquisition_settings(
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
            f'<b:Optics z:Id="{z()}" xmlns:c="{NS_SO}">{_optics(z, "c", "d", mag=mag, defocus=defocus, spot=spot, lens=lens)}</b:Optics>'
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
            f'<b:{AREA_PAIR}><b:key>{area.area_id}</b:key><b:value z:Id="{value_id}">{_id(area.area_id)}'
            f'<ImageAcquisitionSettingXml z:Id="{setting_zid}">{_id(area.setting_id)}{defocus}<ExposureTime>1.7</ExposureTime>'
            f'</ImageAcquisitionSettingXml><ShiftInPixels xmlns:c="{NS_DRAW}"><c:height>{num(area.shift[1])}</c:height>'
            f"<c:width>{num(area.shift[0])}</c:width></ShiftInPixels></b:value></b:{AREA_PAIR}>"
        )
    return (
        f'<TargetAreaTemplate z:Id="{z()}">{_id(template_id)}<AutoFocusArea z:Id="{z()}">{_id(autofocus_id)}'
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
        f'<{tag} z:Id="{z()}">{_id(settings_id)}<I0>0</I0><IsCalibrated>false</IsCalibrated>'
        f"<MaximumIntensity>{maximum}</MaximumIntensity><MinimumIntensity>{minimum}</MinimumIntensity>"
        f'<ReferenceBeamCurrent i:nil="true"/><SmartIceThicknessMaximumIntensity>0</SmartIceThicknessMaximumIntensity>'
        f"<SmartIceThicknessMinimumIntensity>0</SmartIceThicknessMinimumIntensity>{extra}</{tag}>"
    )


@_dm
def epu_session(plan: SessionPlan, grid: GridPlan, *, final: bool) -> str:
    """``EpuSession.dm`` of ``grid``; ``final`` sets the sample's ``EndDateTime`` (the last rewrite)."""
    z = ZIds()
    root_id = z()
    parts = [
        f'<EpuSessionXml z:Id="{root_id}" z:Type="Applications.Epu.Persistence.EpuSessionXml" z:Assembly="{EPU_ASSEMBLY}" '
        f'xmlns="{NS_EPU}" {ROOT_XMLNS}>',
        _id(grid.session_id),
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
        f'<SampleXml z:Id="{sample_zid}">{_id(grid.sample_xml_id)}'
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
        f'{_id(grid.storage_folder_id)}<DiscId>1</DiscId><Path z:Id="{z()}">{text(plan.storage_windows)}</Path>'
        f'<SessionName z:Ref="{name_zid}" i:nil="true"/></StorageFolderXml>'
        + '<StorageFolderXml i:nil="true"/>' * 3
        + "</_items><_size>1</_size><_version>1</_version></StorageFolders>"
    )
    parts.append(_version(z, "a", 0))
    parts.append("</EpuSessionXml>")
    return "".join(parts)


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
        head, comparer = _dictionary_head(
            z, "", INT_COMPARER, refs.get("pa_comparer"), len(hole.micrographs), 7
        )
        refs["pa_comparer"] = comparer
        pairs_id = z()
        pairs = []
        for mic in hole.micrographs:
            pairs.append(
                f'<b:{PARTICLE_PAIR}><b:key>{mic.particle_id}</b:key><b:value z:Id="{z()}" xmlns:c="{NS_EPU}">'
                f"{_id(mic.particle_id)}<c:DataAcquisitionAreaId>{mic.area_id}</c:DataAcquisitionAreaId>"
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
        head, comparer = _dictionary_head(z, "", INT_COMPARER, refs.get("pa_comparer"), 0, 0)
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
        f'<b:{TARGET_PAIR}><b:key>{hole.hole_id}</b:key><b:value z:Id="{value_id}">{_id(hole.hole_id)}'
        f'<BeamShiftId i:nil="true"/><CorrectedStagePosition xmlns:c="{NS_SO}">'
        f"<c:A>0</c:A><c:B>0</c:B><c:X>0</c:X><c:Y>0</c:Y><c:Z>0</c:Z></CorrectedStagePosition>"
        f'<FilterProperties z:Id="{z()}"><PixelIntensityMean>{num(hole.intensity_mean)}</PixelIntensityMean>'
        f"<PixelIntensityStDev>{num(hole.intensity_std)}</PixelIntensityStDev></FilterProperties>{image}"
        f"<IsNearGridBar>{boolean(hole.near_grid_bar)}</IsNearGridBar><IsPositionCorrected>false</IsPositionCorrected>"
        f'<IsPositionRefined>false</IsPositionRefined><IsRecommendedSelection i:nil="true"/><Order>{hole.order}</Order>'
        f'{particles}<PixelCenter xmlns:c="{NS_DRAW}">{_xy("c", *hole.center)}</PixelCenter>'
        f'<PixelWidthHeight xmlns:c="{NS_DRAW}"><c:height>{num(hole.diameter_px)}</c:height><c:width>{num(hole.diameter_px)}</c:width>'
        f'</PixelWidthHeight><PositionInCluster i:nil="true" xmlns:c="{NS_DRAW}"/>{primary}'
        f'<Quality>{num(hole.quality)}</Quality><Rotation>0</Rotation><SecondaryTargetLocationdIds z:Id="{secondary_id}">'
        f"{secondary_items}<a:_size>0</a:_size><a:_version>0</a:_version></SecondaryTargetLocationdIds>"
        f'<Selected>{boolean(hole.selected)}</Selected><Shear>0</Shear><SmartIceThicknessResult i:nil="true"/>'
        f'<StagePosition xmlns:c="{NS_SO}">{_stage("c", hole.stage)}</StagePosition><State>{state}</State>'
        f"</b:value></b:{TARGET_PAIR}>"
    )


@_dm
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
        vertices = "".join(f"<b:PointF>{_xy('b', x, y)}</b:PointF>" for x, y in square.outline)
        xs = [v[0] for v in square.outline] or [0.0]
        ys = [v[1] for v in square.outline] or [0.0]
        shape = (
            f'<GridSquareShape z:Id="{z()}" xmlns:a="{NS_SAT}"><a:center xmlns:b="{NS_DRAW}">{_xy("b", READOUT_W / 2, READOUT_H / 2)}</a:center>'
            f'<a:max xmlns:b="{NS_DRAW}">{_xy("b", max(xs), max(ys))}</a:max><a:min xmlns:b="{NS_DRAW}">{_xy("b", min(xs), min(ys))}</a:min>'
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
            _id(square.square_id),
            f"<AtlasNodeId>{square.square_id}</AtlasNodeId><AutoEucentricPerformed>{boolean(has_image)}</AutoEucentricPerformed>",
            '<BalancedRank i:nil="true"/><BeamCurrent i:nil="true"/><CategoryName i:nil="true"/><CategoryNumber i:nil="true"/>',
            path,
            shape,
            f'<HolePositionCorrection i:nil="true"/><HoleSpacing>{num(HOLE_SPACING_M)}</HoleSpacing>',
            image,
            '<IsRecommendedSelection i:nil="true"/><IsSmartFindHolesDecisionKnown>false</IsSmartFindHolesDecisionKnown>',
            "<IsSmartHoleDecisionKnown>false</IsSmartHoleDecisionKnown><IsSmartIceThicknessDecisionKnown>false</IsSmartIceThicknessDecisionKnown>",
            f'<Order>{square.order}</Order><Position xmlns:a="{NS_SO}">{_stage("a", square.stage)}</Position>',
            f'<RankInsideCategory i:nil="true"/><Rotation>{num(square.rotation)}</Rotation><Selected>{boolean(square.selected)}</Selected>',
            f'<StartDateTime i:nil="true"/><State>{state}</State>',
            f'<TargetLocations z:Id="{collection}" z:Type="Applications.Epu.Persistence.FoilHoleCollectionXml" z:Assembly="{EPU_ASSEMBLY}">',
            _id(square.collection_id or square.square_id + 1),
            f'<GridSquareId>{square.square_id}</GridSquareId><TargetLocations i:nil="true" xmlns:a="{NS_ARR}"/>',
            f'<TargetLocationsEfficient z:Id="{efficient}" xmlns:a="{NS_ARR}"><a:m_comparer z:Id="{comparer}" z:Type="{INT_COMPARER}" z:Assembly="0"/>',
            f'<a:m_keyRehashCount>0</a:m_keyRehashCount><a:m_serializationArray z:Id="{array}" z:Size="{len(holes)}" xmlns:b="{NS_GEN}">',
            entries,
            "</a:m_serializationArray><a:m_serializationCapacity>1117</a:m_serializationCapacity>",
            "<a:m_serializationConcurrencyLevel>12</a:m_serializationConcurrencyLevel></TargetLocationsEfficient></TargetLocations>",
            "<Unusable>false</Unusable></GridSquareXml>",
        )
    )


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
            f'<{prefix}:Center xmlns:d="{NS_DRAW}">{_xy("d", *center)}</{prefix}:Center>'
            f'<{prefix}:Physical xmlns:d="{NS_DRAW}"><d:height>{num(ph)}</d:height><d:width>{num(pw)}</d:width>'
            f"<d:x>{num(px)}</d:x><d:y>{num(py)}</d:y></{prefix}:Physical><{prefix}:Quality>{num(square.atlas_quality)}</{prefix}:Quality>"
            f"<{prefix}:Rotation>{num(square.atlas_rotation)}</{prefix}:Rotation><{prefix}:Shear>0</{prefix}:Shear>"
            f'<{prefix}:Size xmlns:d="{NS_DRAW}"><d:height>{num(size[1])}</d:height><d:width>{num(size[0])}</d:width></{prefix}:Size>'
        )

    positions = "".join(
        f'<b:TilePositionXml z:Id="{z()}">{_id(pos.position_id)}<b:NodePosition xmlns:c="{NS_GAD}">'
        f"{shape('c', (round(pos.center[0], 4), round(pos.center[1], 4)), (round(pos.size[0], 4), round(pos.size[1], 4)))}"
        f"</b:NodePosition><b:TileId>{pos.tile_id}</b:TileId></b:TilePositionXml>"
        for pos in square.tile_positions
    )
    padding = '<b:TilePositionXml i:nil="true"/>' * (4 - len(square.tile_positions))
    features = "".join(f"<a:double>{num(f)}</a:double>" for f in square.features)
    return (
        f'<{NODE_PAIR} xmlns="{NS_GEN}"><key>{square.square_id}</key><value z:Id="{z()}" xmlns:b="{NS_GA}">'
        f'{_id(square.square_id)}<b:AlignedStagePosition xmlns:c="{NS_SO}">{_stage("c", square.aligned_stage)}</b:AlignedStagePosition>'
        f'<b:Category>{square.category}</b:Category><b:FeatureVector z:Id="{z()}" z:Size="{len(square.features)}">{features}</b:FeatureVector>'
        f'<b:PositionOnTheAtlas xmlns:c="{NS_GAD}">{shape("c", (cx, cy), (w, h))}</b:PositionOnTheAtlas>'
        f'<b:StagePosition xmlns:c="{NS_SO}">{_stage("c", Stage(square.stage.x, square.stage.y, 0.0))}</b:StagePosition>'
        f'<b:TilePositions z:Id="{z()}"><b:_items z:Id="{z()}" z:Size="4">{positions}{padding}</b:_items>'
        f"<b:_size>{len(square.tile_positions)}</b:_size><b:_version>{len(square.tile_positions)}</b:_version></b:TilePositions>"
        f"</value></{NODE_PAIR}>"
    )


def _tile(z: ZIds, tile: TilePlan, squares: dict[int, GridSquarePlan], refs: dict[str, int]) -> str:
    node_type = f"Applications.SciencesAppsShared.GridAtlas.Persistence.NodeXml, {GA_ASSEMBLY}"
    tile_zid = z()
    x, y, w, h = tile.atlas_position
    nodes_id = z()
    head, comparer = _dictionary_head(
        z, "", INT_COMPARER, refs.get("node_comparer"), len(tile.square_ids) * 2 + 1, 17
    )
    refs["node_comparer"] = comparer
    pairs_id = z()
    nodes = "".join(_node(z, squares[sid]) for sid in tile.square_ids)
    ref_id = z()
    return (
        f'<TileXml z:Id="{tile_zid}">{_id(tile.tile_id)}<AtlasPixelPosition xmlns:a="{NS_DRAW}"><a:height>{h}</a:height>'
        f"<a:width>{w}</a:width><a:x>{x}</a:x><a:y>{y}</a:y></AtlasPixelPosition>"
        f'<Nodes z:Id="{nodes_id}" z:Type="System.Collections.Generic.Dictionary`2[[{INT32}],[{node_type}]]" z:Assembly="0" xmlns:a="{NS_ARR}">'
        f'{head}<KeyValuePairs z:Id="{pairs_id}" z:Type="System.Collections.Generic.KeyValuePair`2[[{INT32}],[{node_type}]][]" '
        f'z:Assembly="0" z:Size="{len(tile.square_ids)}" xmlns="">{nodes}</KeyValuePairs></Nodes>'
        f'<StagePosition xmlns:a="{NS_SO}">{_stage("a", tile.stage)}</StagePosition>'
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
    body, _, _ = _acquisition_settings(
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
            f'<Optics z:Id="{optics_id}" xmlns="{NS_AA}" xmlns:{sp}="{NS_SO}">{_optics(z, sp, vp, mag=4.0, defocus=-0.001, spot=8, lens="LM")}</Optics>'
            f'<Rotation xmlns="{NS_AA}">{num(rotation)}</Rotation><TimeStamp xmlns="{NS_AA}">{when}</TimeStamp>'
            f'<Translation xmlns="{NS_AA}" xmlns:{sp}="{NS_DRAW}"><{sp}:height>1.66927057E-05</{sp}:height>'
            f"<{sp}:width>7.14462E-07</{sp}:width></Translation></{q}AtlasAlignmentTransformation>"
        )
        optics_ref = f'<{q}OpticsSettings z:Ref="{optics_id}" i:nil="true" xmlns:{sp}="{NS_SO}"/>'
    else:
        align = f'<{q}AlignmentTileId i:nil="true"/><{q}AtlasAlignmentTransformation i:nil="true"/>'
        optics_ref = (
            f'<{q}OpticsSettings z:Id="{z()}" xmlns:{sp}="{NS_SO}">'
            f"{_optics(z, sp, vp, mag=0.0, defocus=0.0, spot=0, lens='LM', bare=True)}</{q}OpticsSettings>"
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
        f"{_id(atlas_id)}<{q}AcquiredWithImageBeamShift>false</{q}AcquiredWithImageBeamShift>"
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


@_dm
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
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_GA}" {ROOT_XMLNS}>{_id(atlas.atlas_id)}'
        f'<Atlas z:Id="{atlas_zid}">{body}</Atlas>'
        f'<Description z:Id="{z()}">Atlas for autoloader slot {atlas.slot}</Description><ImageFileFormat>Mrc</ImageFileFormat>'
        f'<Name z:Id="{z()}">Atlas</Name><StartDateTime>{timestamp(atlas.started)}</StartDateTime>'
        f'<StorageFolder z:Id="{z()}">{text(atlas.storage_folder_windows)}</StorageFolder>{_version(z, "a", -1)}</AtlasSessionXml>'
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


@_dm
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
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_GA}" {ROOT_XMLNS}>{_id(screening.root_atlas_id)}'
        f'<Atlas z:Id="{atlas_zid}">{body}</Atlas><Description z:Id="{z()}"/><ImageFileFormat>Mrc</ImageFileFormat>'
        f'<Name z:Id="{z()}">Atlas</Name><StartDateTime>{timestamp(screening.started)}</StartDateTime>'
        f'<StorageFolder z:Id="{z()}">{text(screening.storage_folder_windows)}\\{text(screening.name)}</StorageFolder>'
        f"{_version(z, 'a', -1)}</AtlasSessionXml>"
    )


@_dm
def sample_dm(plan: SessionPlan, grid: GridPlan) -> str:
    """``Sample<k>/Sample.dm``."""
    del plan
    atlas = grid.atlas
    z = ZIds()
    return (
        f'<SampleXml z:Id="{z()}" z:Type="Applications.SciencesAppsShared.GridAtlas.Persistence.Screening.SampleXml" '
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_SCR}" {ROOT_XMLNS}>{_id(atlas.sample_id)}'
        "<AcquiredAtlasAvailable>true</AcquiredAtlasAvailable><AcquisitionPercentageCompleted>100</AcquisitionPercentageCompleted>"
        f'<AtlasAcquisitionStatus z:Id="{z()}">Acquired</AtlasAcquisitionStatus>'
        f'<AtlasSessionStorageFolder z:Id="{z()}">.</AtlasSessionStorageFolder><Guid>00000000-0000-0000-0000-000000000000</Guid>'
        f'<HistoricSample>false</HistoricSample><Name z:Id="{z()}">{text(atlas.sample_name)}</Name>'
        f"<SelectedForAtlasAcquisition>true</SelectedForAtlasAcquisition><SlotId>{atlas.slot}</SlotId>"
        f'<SpecimenCarrierType z:Id="{z()}">Occupied</SpecimenCarrierType>{_version(z, "a", -1)}</SampleXml>'
    )


@_dm
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
        f'<AtlasSession z:Id="{atlas_session}" xmlns:a="{NS_GA}">{_id(screening.atlas_session_id)}'
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
    head, _ = _dictionary_head(z, "", INT_COMPARER, None, len(plan.grids), 7)
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
        f'z:Assembly="{GA_ASSEMBLY}" xmlns="{NS_SCR}" {ROOT_XMLNS}>{_id(screening.screening_id)}{atlas_xml}'
        f'<Description z:Ref="{description}" i:nil="true"/><ImageFileFormat>Mrc</ImageFileFormat>'
        f'<Name z:Id="{name_id}">{text(screening.name)}</Name>'
        f'<Samples z:Id="{samples_id}" xmlns:a="{NS_GA}">{_id(screening.samples_id)}'
        f'<a:Samples z:Id="{dict_id}" z:Type="System.Collections.Generic.Dictionary`2[[{INT32}],[{ref_type}]]" z:Assembly="0" xmlns:b="{NS_ARR}">'
        f'{head}<KeyValuePairs z:Id="{pairs_id}" z:Type="System.Collections.Generic.KeyValuePair`2[[{INT32}],[{ref_type}]][]" '
        f'z:Assembly="0" z:Size="{len(pairs)}" xmlns="">{"".join(pairs)}</KeyValuePairs></a:Samples></Samples>'
        f"<StartDateTime>{timestamp(screening.started)}</StartDateTime>"
        f'<StorageFolder z:Id="{z()}">{text(screening.storage_folder_windows)}</StorageFolder>{_version(z, "a", -1)}</ScreeningSessionXml>'
    )


Renderer = Callable[[], str]

__all__ = [
    "Renderer",
    "atlas_dm",
    "epu_session",
    "gridsquare_dm",
    "microscope_image",
    "sample_dm",
    "screening_root_atlas_dm",
    "screening_session_dm",
]

del MSCORLIB
