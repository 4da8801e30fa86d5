"""The ``MicroscopeImage`` XML written next to every grid-square, foil-hole, micrograph, tile and atlas image."""

from __future__ import annotations

from testbed.epu.dotnet import (
    NS_ARR,
    NS_DRAW,
    NS_FCT,
    NS_FT,
    NS_MEDIA,
    NS_OMP,
    NS_SO,
    NS_XS,
    boolean,
    num,
    timestamp,
)
from testbed.epu.plan import (
    CAMERA_NAME,
    COMPUTER_NAME,
    DETECTOR_COMMERCIAL_NAME,
    EPU_VERSION,
    INSTRUMENT_ID,
    INSTRUMENT_MODEL,
    READOUT_H,
    READOUT_W,
    TEMAPP_VERSION,
    ImagePlan,
)
from testbed.epu.templates_common import xy_xml

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
            f'<b:Center xmlns:c="{NS_DRAW}">{xy_xml("c", *image.found_center)}</b:Center>'
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


__all__ = [
    "microscope_image",
]
