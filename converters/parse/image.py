"""``MicroscopeImage`` documents (grid-square, foil-hole, micrograph, atlas and tile image XMLs): the one
reader of image metadata that every image kind shares."""

from __future__ import annotations

from converters._xml import (
    I_NIL_KEY,
    I_TYPE_KEY,
    NS_FT,
    NS_OMP,
    Element,
    Reader,
    children,
    local_name,
    q,
)
from converters.models import (
    ImageMetadata,
)
from converters.parse._common import (
    _ARR_KEY,
    _ARR_VALUE,
    _SO,
    _SO_IMAGE,
    Fields,
    _int_or_none,
    _point,
    _size,
    _stage,
    _vector,
)


def _type_of(value: Element) -> tuple[str | None, str]:
    """Resolve the ``i:type`` QName of a property-bag value: (namespace URI, local name)."""
    raw = value.get(I_TYPE_KEY)
    if not raw:
        return None, ""
    prefix, sep, local = raw.partition(":")
    if not sep:
        return value.nsmap.get(None), raw
    return value.nsmap.get(prefix), local


def _type_local_name(value: Element) -> str:
    """The local name of the ``i:type`` QName alone (``_type_of(value)[1]`` without building ``nsmap``)."""
    raw = value.get(I_TYPE_KEY)
    if not raw:
        return ""
    _, sep, local = raw.partition(":")
    return local if sep else raw


def _property_bag(r: Reader, el: Element | None) -> dict[str, Element]:
    """``arr:KeyValueOfstringanyType`` entries: key -> value element (dereferenced; nil values left out).

    Types are resolved only for the entries that are read (:func:`_type_of`); resolving every QName would
    cost more than the rest of the image. An entry is read as its last ``Key`` and last ``Value`` child; the
    usual two-child ``Key, Value`` entry takes a shortcut with the same result.
    """
    out: dict[str, Element] = {}
    if el is None:
        return out
    el = r.deref(el)
    if not len(el) or r.is_nil(el):
        return out
    has_refs = r.has_refs
    for entry in children(el):
        parts = children(entry)
        key: str | None
        value: Element | None
        if len(parts) == 2 and parts[0].tag == _ARR_KEY and parts[1].tag == _ARR_VALUE:
            key, value = parts[0].text, parts[1]
        else:
            key, value = _bag_entry(entry)
        if key is None or value is None:
            continue
        if has_refs:
            value = r.deref(value)
        if value.get(I_NIL_KEY) == "true":
            continue
        out[key.strip()] = value
    return out


def _bag_entry(entry: Element) -> tuple[str | None, Element | None]:
    """The general case of a property-bag entry: text of the last ``Key``, the last ``Value``."""
    key = value = None
    for part in children(entry):
        if part.tag == _ARR_KEY:
            key = part.text
        elif part.tag == _ARR_VALUE:
            value = part
    return key, value


_FT_CENTER, _FT_SIZE, _FT_QUALITY, _FT_ROTATION, _FT_SHEAR = (
    q(NS_FT, n) for n in ("Center", "Size", "Quality", "Rotation", "Shear")
)
_OMP_NUMBER, _OMP_DOSE_FRACTIONS = q(NS_OMP, "NumberOffractions"), q(NS_OMP, "DoseFractions")


def _found_hole(r: Reader, value: Element) -> Fields:
    """``Shape2D`` value of ``FindFoilHoleCenterResults`` -> :class:`FoundHole` fields."""
    kids = r.kids(value)
    cx, cy = _point(r, kids.get(_FT_CENTER))
    w, h = _size(r, kids.get(_FT_SIZE))
    return {
        "center_x_px": cx,
        "center_y_px": cy,
        "width_px": w,
        "height_px": h,
        "quality": r.as_float(kids.get(_FT_QUALITY)),
        "rotation_rad": r.as_float(kids.get(_FT_ROTATION)),
        "shear": r.as_float(kids.get(_FT_SHEAR)),
    }


def _fractionation(r: Reader, local: str, value: Element) -> Fields:
    """``FractionationSettings`` value (``local``: its type's local name) -> :class:`Fractionation` fields."""
    kids = r.kids(value)
    if local == "EquidistantFractionation":
        return {"kind": "equidistant", "number_of_fractions": r.as_int(kids.get(_OMP_NUMBER))}
    if local == "VaridistantFractionation":
        fractions = kids.get(_OMP_DOSE_FRACTIONS)
        count = sum(1 for item in r.elements(fractions) if not r.is_nil(r.deref(item)))
        return {"kind": "varidistant", "number_of_fractions": count}
    if local == "EerFractionation":
        return {"kind": "eer"}
    return {"kind": local or "unknown"}


# Clark names of the MicroscopeImage members read below, bound to module constants once: the image reader runs
# for every micrograph and foil-hole image, where even dictionary look-ups of names show in profiles.
_S_CUSTOM, _S_UNIQUE_ID, _S_SPATIAL, _S_PIXEL, _S_NUMERIC, _S_X, _S_Y = (
    _SO[n] for n in ("CustomData", "uniqueID", "SpatialScale", "pixelSize", "numericValue", "x", "y")
)
_S_MICROSCOPE, _S_ACQUISITION, _S_CAMERA, _S_CORE, _S_GUN, _S_INSTRUMENT, _S_OPTICS, _S_STAGE = (
    _SO[n]
    for n in ("microscopeData", "acquisition", "camera", "core", "gun", "instrument", "optics", "stage")
)
_S_ACQ_TIME, _S_BINNING, _S_CAMERA_INPUT, _S_EXPOSURE, _S_NAME, _S_READOUT = (
    _SO[n]
    for n in ("acquisitionDateTime", "Binning", "CameraSpecificInput", "ExposureTime", "Name", "ReadoutArea")
)
_S_SOFTWARE, _S_SOFTWARE_VERSION, _S_VOLTAGE, _S_COMPUTER, _S_INSTRUMENT_ID, _S_INSTRUMENT_MODEL = (
    _SO[n]
    for n in (
        "ApplicationSoftware",
        "ApplicationSoftwareVersion",
        "AccelerationVoltage",
        "ComputerName",
        "InstrumentID",
        "InstrumentModel",
    )
)
_S_BEAM_SHIFT, _S_BEAM_TILT, _S_DEFOCUS, _S_EFTEM, _S_IMAGE_SHIFT, _S_PROBE, _S_SPOT = (
    _SO[n] for n in ("BeamShift", "BeamTilt", "Defocus", "EFTEMOn", "ImageShift", "ProbeMode", "SpotIndex")
)
_S_FILTER, _S_SLIT_IN, _S_SLIT_WIDTH, _S_TEM_MAG, _S_NOMINAL_MAG, _S_POSITION = (
    _SO[n]
    for n in (
        "EnergyFilter",
        "EnergySelectionSlitInserted",
        "EnergySelectionSlitWidth",
        "TemMagnification",
        "NominalMagnification",
        "Position",
    )
)


def _image_metadata(r: Reader, root: Element) -> ImageMetadata:
    """Read a ``MicroscopeImage`` root.

    Every member is read at its exact path (``microscopeData/optics/Defocus``...), one children map per
    container on the way; the same code serves documents with and without ``z:Ref`` (the reader dereferences
    only when the document has references).
    """
    if root.tag != _SO_IMAGE:
        raise r.malformed(f"expected root MicroscopeImage, found {local_name(str(root.tag))}", root)
    kids, as_float, as_str, as_bool = r.kids, r.as_float, r.as_str, r.as_bool
    top = kids(root)
    md = kids(top.get(_S_MICROSCOPE))
    acquisition = kids(md.get(_S_ACQUISITION))
    camera = kids(acquisition.get(_S_CAMERA))
    optics = kids(md.get(_S_OPTICS))
    core = kids(md.get(_S_CORE))
    instrument = kids(md.get(_S_INSTRUMENT))
    energy_filter = kids(optics.get(_S_FILTER))

    pixel = kids(kids(top.get(_S_SPATIAL)).get(_S_PIXEL))
    pixel_x = as_float(kids(pixel.get(_S_X)).get(_S_NUMERIC))
    pixel_y = as_float(kids(pixel.get(_S_Y)).get(_S_NUMERIC))
    width, height = _size(r, camera.get(_S_READOUT))
    bin_x, bin_y = _point(r, camera.get(_S_BINNING))

    bag = _property_bag(r, top.get(_S_CUSTOM))
    custom: dict[str, str] = {}
    for key, value in bag.items():
        if not len(value):  # scalar entries only; structured ones are read below when known
            custom[key] = (value.text or "").strip()
    found: Fields | None = None
    shape = bag.get("FindFoilHoleCenterResults")
    if shape is not None and _type_of(shape) == (NS_FT, "Shape2D"):
        found = _found_hole(r, shape)
    camera_input = _property_bag(r, camera.get(_S_CAMERA_INPUT))
    fractionation: Fields | None = None
    settings = camera_input.get("FractionationSettings")
    if settings is not None:
        # Only the type's local name decides (resolving its namespace prefix costs an nsmap per image).
        fractionation = _fractionation(r, _type_local_name(settings), settings)

    detector = as_str(camera.get(_S_NAME))
    commercial = bag.get("DetectorCommercialName")
    if commercial is None and detector:
        commercial = bag.get(f"Detectors[{detector}].CommercialName")
    frame_rate = bag.get(f"Detectors[{detector}].FrameRate") if detector else None

    return ImageMetadata(
        unique_id=as_str(top.get(_S_UNIQUE_ID)),
        acquisition_datetime=r.as_datetime(acquisition.get(_S_ACQ_TIME)),
        pixel_size_x_m=pixel_x,
        pixel_size_y_m=pixel_y,
        image_width_px=_int_or_none(width),
        image_height_px=_int_or_none(height),
        binning_x=_int_or_none(bin_x),
        binning_y=_int_or_none(bin_y),
        detector_name=detector,
        detector_commercial_name=as_str(commercial),
        exposure_time_s=as_float(camera.get(_S_EXPOSURE)),
        defocus_m=as_float(optics.get(_S_DEFOCUS)),
        applied_defocus_m=as_float(bag.get("AppliedDefocus")),
        dose_e_per_m2=as_float(bag.get("Dose")),
        dose_on_camera_e_per_px=as_float(bag.get("DoseOnCamera")),
        dose_rate=as_float(bag.get("DoseRate")),
        stage_position=_stage(r, kids(md.get(_S_STAGE)).get(_S_POSITION)),
        beam_shift=_vector(r, optics.get(_S_BEAM_SHIFT)),
        image_shift=_vector(r, optics.get(_S_IMAGE_SHIFT)),
        beam_tilt=_vector(r, optics.get(_S_BEAM_TILT)),
        nominal_magnification=as_float(kids(optics.get(_S_TEM_MAG)).get(_S_NOMINAL_MAG)),
        spot_index=r.as_int(optics.get(_S_SPOT)),
        probe_mode=as_str(optics.get(_S_PROBE)),
        acceleration_voltage_v=as_float(kids(md.get(_S_GUN)).get(_S_VOLTAGE)),
        instrument_model=as_str(instrument.get(_S_INSTRUMENT_MODEL)),
        instrument_id=as_str(instrument.get(_S_INSTRUMENT_ID)),
        computer_name=as_str(instrument.get(_S_COMPUTER)),
        software_name=as_str(core.get(_S_SOFTWARE)),
        software_version=as_str(core.get(_S_SOFTWARE_VERSION)),
        energy_filter_on=as_bool(optics.get(_S_EFTEM)),
        energy_selection_slit_inserted=as_bool(energy_filter.get(_S_SLIT_IN)),
        energy_selection_slit_width_ev=as_float(energy_filter.get(_S_SLIT_WIDTH)),
        phase_plate_used=as_bool(bag.get("PhasePlateUsed")),
        electron_counting=as_bool(camera_input.get("ElectronCountingEnabled")),
        super_resolution_factor=r.as_int(camera_input.get("SuperResolutionFactor")),
        fractionation=fractionation,
        frame_rate_hz=as_float(frame_rate),
        found_hole=found,
        custom_data=custom,
    )
