"""Bad input: truncated, malformed, unsafe and random XML give only the package's own exceptions."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import (
    ConverterError,
    EpuFileKind,
    EpuPath,
    IncompleteFileError,
    MalformedFileError,
    UnknownFileError,
    UnsafeFileError,
    parse_bytes,
    parse_file,
)

ARR = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
SO = "http://schemas.datacontract.org/2004/07/Fei.SharedObjects"
EPU = "http://schemas.datacontract.org/2004/07/Applications.Epu.Persistence"
T = "http://schemas.datacontract.org/2004/07/Fei.Applications.Common.Types"
Z = "http://schemas.microsoft.com/2003/10/Serialization/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

# Synthetic, minimal documents (one per parser family) for the property tests, so that they run without samples.
SESSION = (
    f'<EpuSessionXml xmlns="{EPU}" xmlns:z="{Z}" xmlns:i="{XSI}" z:Id="1" '
    'z:Assembly="Applications.Epu.Persistence, Version=3.7.0.6930, Culture=neutral">'
    f'<Id xmlns="{T}">42</Id><Name z:Id="2">Supervisor_1</Name><ClusteringRadius>1.2E-05</ClusteringRadius>'
    "<Samples><_items><SampleXml><AtlasId>Z:\\v\\atlas\\S\\Sample1\\Atlas\\Atlas.dm</AtlasId>"
    f'<GridSquares><a:m_serializationArray xmlns:a="{ARR}" '
    'xmlns:b="http://schemas.datacontract.org/2004/07/System.Collections.Generic">'
    "<b:KeyValuePairOfintSerializedReferenceOfGridSquareXml_Abc><b:key>7</b:key><b:value/>"
    "</b:KeyValuePairOfintSerializedReferenceOfGridSquareXml_Abc></a:m_serializationArray></GridSquares>"
    '</SampleXml><SampleXml i:nil="true"/></_items><_size>1</_size></Samples>'
    '<StartDateTime>2024-04-05T11:36:47.2285448Z</StartDateTime><DisplayName z:Ref="2" i:nil="true"/>'
    "</EpuSessionXml>"
).encode()
IMAGE = (
    f'<MicroscopeImage xmlns="{SO}" xmlns:i="{XSI}"><uniqueID>u-1</uniqueID>'
    f'<CustomData xmlns:a="{ARR}"><a:KeyValueOfstringanyType><a:Key>Dose</a:Key>'
    '<a:Value xmlns:b="http://www.w3.org/2001/XMLSchema" i:type="b:double">2.5E+20</a:Value>'
    "</a:KeyValueOfstringanyType></CustomData>"
    "<microscopeData><optics><Defocus>-2E-06</Defocus><EFTEMOn>True</EFTEMOn></optics>"
    "<acquisition><acquisitionDateTime>2026-02-18T01:49:27.1368185+01:00</acquisitionDateTime></acquisition>"
    "</microscopeData></MicroscopeImage>"
).encode()


def _info(kind: EpuFileKind, name: str) -> EpuPath:
    gs = "/s/Images-Disc1/GridSquare_7"
    paths = {
        EpuFileKind.SESSION: "/s/EpuSession.dm",
        EpuFileKind.GRIDSQUARE_METADATA: "/s/Metadata/GridSquare_7.dm",
        EpuFileKind.GRIDSQUARE_IMAGE: f"{gs}/GridSquare_20250101_101010.xml",
        EpuFileKind.FOILHOLE_IMAGE: f"{gs}/FoilHoles/FoilHole_1_20250101_101010.xml",
        EpuFileKind.MICROGRAPH: f"{gs}/Data/FoilHole_1_Data_2_3_20250101_101010.xml",
        EpuFileKind.FRACTIONS: f"{gs}/Data/FoilHole_1_Data_2_3_20250101_101010_Fractions.xml",
        EpuFileKind.ATLAS: "/a/Sample1/Atlas/Atlas.dm",
        EpuFileKind.ATLAS_IMAGE: "/a/Sample1/Atlas/Atlas_9.xml",
        EpuFileKind.ATLAS_TILE: "/a/Sample1/Atlas/Tile_8_0_9.xml",
        EpuFileKind.SAMPLE: "/a/Sample1/Sample.dm",
        EpuFileKind.SCREENING_SESSION: "/a/ScreeningSession.dm",
    }
    from converters import classify_path

    info = classify_path(paths[kind])
    assert info is not None
    assert info.kind is kind, name
    return info


ALL_KINDS = list(EpuFileKind)


def test_synthetic_documents_parse() -> None:
    session = parse_bytes(SESSION, _info(EpuFileKind.SESSION, "s"))
    assert session.kind is EpuFileKind.SESSION
    assert session.acquisition.session_id == "42"
    assert session.acquisition.gridsquare_ids == ["7"]
    assert session.acquisition.epu_version == "3.7.0.6930"
    micrograph = parse_bytes(IMAGE, _info(EpuFileKind.MICROGRAPH, "m"))
    image = micrograph.micrograph.image  # type: ignore[union-attr]
    assert image is not None
    assert image.dose_e_per_a2 == pytest.approx(2.5)
    assert image.energy_filter_on is True  # "True" accepted case-insensitively


@pytest.mark.parametrize("document", [SESSION, IMAGE])
def test_every_truncation_is_incomplete(document: bytes) -> None:
    kind = EpuFileKind.SESSION if document is SESSION else EpuFileKind.MICROGRAPH
    info = _info(kind, "t")
    for cut in range(len(document)):
        with pytest.raises(IncompleteFileError):
            parse_bytes(document[:cut], info)


def test_malformed_names_file_and_element() -> None:
    bad = IMAGE.replace(b"-2E-06", b"minus two")
    with pytest.raises(MalformedFileError) as caught:
        parse_bytes(bad, _info(EpuFileKind.MICROGRAPH, "m"))
    assert caught.value.element == "MicroscopeImage/microscopeData/optics/Defocus"
    assert "FoilHole_1_Data_2_3_20250101_101010.xml" in str(caught.value)
    with pytest.raises(MalformedFileError, match="expected root MicroscopeImage"):
        parse_bytes(SESSION, _info(EpuFileKind.MICROGRAPH, "m"))
    with pytest.raises(MalformedFileError, match="not well-formed"):
        parse_bytes(b"<a><b></a></b>", _info(EpuFileKind.MICROGRAPH, "m"))
    with pytest.raises(MalformedFileError, match="z:Ref=99"):
        parse_bytes(
            SESSION.replace(b'<Name z:Id="2">Supervisor_1</Name>', b'<Name z:Ref="99" i:nil="true"/>'),
            _info(EpuFileKind.SESSION, "s"),
        )
    no_id = SESSION.replace(f'<Id xmlns="{T}">42</Id>'.encode(), b"")
    with pytest.raises(MalformedFileError) as missing:
        parse_bytes(no_id, _info(EpuFileKind.SESSION, "s"))
    assert missing.value.element == "EpuSessionXml/Id"


def test_zref_resolves_to_the_referenced_value() -> None:
    doc = SESSION.replace(b'<Name z:Id="2">Supervisor_1</Name>', b'<Name z:Ref="5" i:nil="true"/>').replace(
        b"<ClusteringRadius>", b'<ClusteringMode z:Id="5">Supervisor_ref</ClusteringMode><ClusteringRadius>'
    )
    session = parse_bytes(doc, _info(EpuFileKind.SESSION, "s"))
    assert session.acquisition.name == "Supervisor_ref"  # type: ignore[union-attr]


def test_old_epu1_namespace_accepted() -> None:
    old = SESSION.replace(
        EPU.encode(), b"http://schemas.datacontract.org/2004/07/Fei.Applications.Epu.Persistence"
    )
    session = parse_bytes(old, _info(EpuFileKind.SESSION, "s"))
    assert session.acquisition.name == "Supervisor_1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "payload",
    [
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>',
        b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><x/>',
        b'<!ENTITY a "b"><x/>',
    ],
)
def test_declarations_refused(payload: bytes) -> None:
    with pytest.raises(UnsafeFileError):
        parse_bytes(payload, _info(EpuFileKind.MICROGRAPH, "m"))


def test_utf16_doctype_refused() -> None:
    payload = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'.encode(
        "utf-16"
    )
    with pytest.raises(UnsafeFileError):
        parse_bytes(payload, _info(EpuFileKind.MICROGRAPH, "m"))


def test_size_cap_and_files(tmp_path: Path) -> None:
    path = tmp_path / "Images-Disc1" / "GridSquare_7" / "Data" / "FoilHole_1_Data_2_3_20250101_101010.xml"
    path.parent.mkdir(parents=True)
    path.write_bytes(IMAGE)
    assert parse_file(path).kind is EpuFileKind.MICROGRAPH
    with pytest.raises(UnsafeFileError, match="cap"):
        parse_file(path, max_bytes=100)
    path.write_bytes(b"")
    with pytest.raises(IncompleteFileError, match="empty"):
        parse_file(path)
    with pytest.raises(IncompleteFileError, match="disappeared"):
        parse_file(path.with_name("FoilHole_1_Data_2_3_20250101_101011.xml"))
    with pytest.raises(UnknownFileError):
        parse_file(tmp_path / "notes.txt")


# ------------------------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------------------------

_names = st.sampled_from(
    [
        "Id",
        "Name",
        "_items",
        "_size",
        "KeyValuePairOfintX",
        "key",
        "value",
        "x",
        "y",
        "Defocus",
        "Dose",
        "Key",
    ]
)
_namespaces = st.sampled_from(["", EPU, SO, T, ARR, "http://schemas.datacontract.org/2004/07/System.Drawing"])
_texts = st.one_of(st.text(max_size=8), st.sampled_from(["1", "-2E-06", "true", "2024-04-05T11:36:47Z", "x"]))


@st.composite
def _elements(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(_names)
    ns = draw(_namespaces)
    attrs = ""
    if draw(st.booleans()):
        attrs += f' xmlns="{ns}"'
    if draw(st.integers(0, 5)) == 0:
        attrs += f' xmlns:z="{Z}" z:Ref="{draw(st.integers(0, 3))}"'
    if draw(st.integers(0, 5)) == 0:
        attrs += f' xmlns:i="{XSI}" i:nil="true"'
    if depth >= 3 or draw(st.booleans()):
        text = draw(_texts).replace("&", "&amp;").replace("<", "&lt;")
        return f"<{name}{attrs}>{text}</{name}>"
    children = "".join(draw(st.lists(_elements(depth + 1), max_size=4)))
    return f"<{name}{attrs}>{children}</{name}>"


@st.composite
def _documents(draw: st.DrawFn) -> bytes:
    root = draw(
        st.sampled_from(
            ["MicroscopeImage", "EpuSessionXml", "GridSquareXml", "AtlasSessionXml", "Acquisition"]
        )
    )
    ns = draw(
        st.sampled_from(
            [
                SO,
                EPU,
                "http://schemas.datacontract.org/2004/07/Applications.SciencesAppsShared.GridAtlas.Persistence",
                "",
            ]
        )
    )
    body = "".join(draw(st.lists(_elements(), max_size=5)))
    return f'<{root} xmlns="{ns}"><Id xmlns="{T}">1</Id>{body}</{root}>'.encode()


def _only_package_errors(data: bytes, kind: EpuFileKind) -> None:
    with contextlib.suppress(ConverterError):
        parse_bytes(data, _info(kind, "p"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_documents(), kind=st.sampled_from(ALL_KINDS))
def test_random_xml_gives_only_package_errors(data: bytes, kind: EpuFileKind) -> None:
    _only_package_errors(data, kind)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300), kind=st.sampled_from(ALL_KINDS))
def test_random_bytes_give_only_package_errors(data: bytes, kind: EpuFileKind) -> None:
    _only_package_errors(data, kind)


@settings(max_examples=200, deadline=None)
@given(
    doc=st.sampled_from([SESSION, IMAGE]),
    kind=st.sampled_from(ALL_KINDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_xml_gives_only_package_errors(
    doc: bytes, kind: EpuFileKind, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(doc)
    for position, byte in edits:
        data[position % len(data)] = byte
    _only_package_errors(bytes(data), kind)


@settings(max_examples=100, deadline=None)
@given(doc=st.sampled_from([SESSION, IMAGE]), cut=st.floats(0, 1, exclude_max=True))
def test_truncation_property(doc: bytes, cut: float) -> None:
    kind = EpuFileKind.SESSION if doc is SESSION else EpuFileKind.MICROGRAPH
    with pytest.raises(IncompleteFileError):
        parse_bytes(doc[: int(len(doc) * cut)], _info(kind, "t"))


_SAMPLE_FILES = [
    "DiamondLightSource__smartem-decisions/docs/assets/metadata_spa_acquisition/EPU_session/EpuSession.dm",
    "kylelmorris__EMharvest/_repo_data/atlas/Supervisor_20230919_115905_Atlas_bi23047-106/Sample2/Sample.dm",
    "kylelmorris__EMharvest/_repo_data/atlas/Supervisor_20230919_115905_Atlas_bi23047-106/ScreeningSession.dm",
    "kylelmorris__EMharvest/_repo_data/atlas/Supervisor_20230919_115905_Atlas_bi23047-106/Sample2/Atlas/Atlas.dm",
    "kylelmorris__EMharvest/_repo_data/atlas/Supervisor_20230919_115905_Atlas_bi23047-106/Sample2/Atlas/"
    "Tile_19493278_0_19493264.xml",
    "DiamondLightSource__smartem-decisions/tests/testdata/epu-dir-example/Images-Disc1/GridSquare_8999138/"
    "FoilHoles/FoilHole_9015889_20250108_154715.xml",
    "DustinMorado__EPU_group_AFIS/spec/Images-Disc1/GridSquare_5324661/Data/"
    "FoilHole_5330585_Data_5338216_5338218_20200206_170645_Fractions.xml",
]


@pytest.mark.samples
@settings(max_examples=60, deadline=None)
@given(
    index=st.integers(0, len(_SAMPLE_FILES) - 1),
    cut=st.floats(0, 1, exclude_max=True),
    byte=st.integers(0, 255),
)
def test_real_files_truncated_and_mutated(epu_samples_dir: Path, index: int, cut: float, byte: int) -> None:
    from converters import classify_path

    path = epu_samples_dir / _SAMPLE_FILES[index]
    info = classify_path(path)
    assert info is not None
    data = path.read_bytes()
    end = len(data.rstrip())
    position = int(end * cut)
    with pytest.raises(IncompleteFileError):
        parse_bytes(data[:position], info)
    mutated = bytearray(data)
    mutated[position] = byte
    with contextlib.suppress(ConverterError):
        parse_bytes(bytes(mutated), info)


def test_image_with_references_is_dereferenced() -> None:
    doc = IMAGE.replace(
        b"<microscopeData>",
        f'<microscopeData xmlns:z="{Z}"><core><ApplicationSoftware z:Id="7">EPU</ApplicationSoftware>'
        '<ApplicationSoftwareVersion z:Ref="7" i:nil="true"/></core>'.encode(),
    )
    result = parse_bytes(doc, _info(EpuFileKind.MICROGRAPH, "m"))
    image = result.micrograph.image  # type: ignore[union-attr]
    assert image is not None
    assert (image.software_name, image.software_version) == ("EPU", "EPU")
    assert image.defocus_m == -2e-06
