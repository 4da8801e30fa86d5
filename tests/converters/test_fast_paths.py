"""The speed-ups keep every answer: each fast path is checked against the slower, obviously right one.

* ``classify_path`` answers plain POSIX paths with string operations; the pathlib branch is the reference.
* ``mentions_ref`` hops between ``R`` bytes; a regular expression over the whole document is the reference,
  and a document it calls free of ``z:Ref`` must really be free of them (readers then skip dereferencing).
* Readers skip ``z:Ref`` / ``i:nil`` reads where they cannot matter; forcing the dereferencing reader on real
  files must give identical models.
* The property-bag shortcut for the usual ``Key, Value`` entry gives what the general entry reader gives.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import converters.paths as paths_module
from converters import EpuFileKind, EpuPath, MalformedFileError, classify_path, parse_bytes
from converters._xml import Reader, mentions_ref, parse_xml
from converters.parse import _image_metadata

ARR = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
SO = "http://schemas.datacontract.org/2004/07/Fei.SharedObjects"
EPU = "http://schemas.datacontract.org/2004/07/Applications.Epu.Persistence"
T = "http://schemas.datacontract.org/2004/07/Fei.Applications.Common.Types"
Z = "http://schemas.microsoft.com/2003/10/Serialization/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

NAMES = [
    "EpuSession.dm",
    "GridSquare_4590776.dm",
    "GridSquare_20250108_151151.xml",
    "FoilHole_9015889_20250108_154715.xml",
    "FoilHole_12_20190314_0619.xml",
    "FoilHole_9015883_Data_9017347_6_20250108_154915.xml",
    "FoilHole_9015883_Data_9017347_6_20250108_154915_Fractions.xml",
    "Atlas.dm",
    "Atlas_19493264.xml",
    "Tile_19497669_12_19497485.xml",
    "Sample.dm",
    "ScreeningSession.dm",
    "gridsquare_1.DM",
    "notes.txt",
    "",
    ".",
]
FOLDERS = ["Metadata", "metadata", "GridSquare_8999138", "Images-Disc1", "images-disc2", "Data", "FoilHoles"]
FOLDERS += ["Atlas", "Sample4", "visit", ".", "..", "", "a b", "C:", "~"]


def _reference(path: str) -> EpuPath | None:
    """``classify_path`` through its pathlib branch only."""
    original = paths_module._plain_posix_parents
    paths_module._plain_posix_parents = lambda text: None
    try:
        return classify_path(path)
    finally:
        paths_module._plain_posix_parents = original


@settings(max_examples=400, deadline=None)
@given(
    lead=st.sampled_from(["", "/", "./", "//", "../"]),
    folders=st.lists(st.sampled_from(FOLDERS), max_size=7),
    name=st.sampled_from(NAMES),
    separator=st.sampled_from(["/", "/", "//", "\\"]),
    trail=st.sampled_from(["", "", "/", "/."]),
)
def test_classify_fast_path_matches_pathlib(
    lead: str, folders: list[str], name: str, separator: str, trail: str
) -> None:
    path = lead + separator.join([*folders, name]) + trail
    assert classify_path(path) == _reference(path), path


def test_classify_fast_path_on_real_layout(epu_samples_dir: Path) -> None:
    checked = 0
    for path in sorted(epu_samples_dir.rglob("*")):
        fast = classify_path(str(path))
        assert fast == _reference(str(path)), path
        assert classify_path(path) == fast
        checked += fast is not None
    assert checked > 500


def test_classify_fast_path_keeps_relative_and_root_answers() -> None:
    image = classify_path("Images-Disc1/GridSquare_7/Data/FoilHole_1_Data_2_3_20240101_120000.xml")
    assert image is not None
    assert (image.gridsquare_id, image.session_root) == ("7", ".")
    sample = classify_path("/Sample.dm")
    assert sample is not None
    assert sample.atlas_root == str(PurePosixPath("/") / "Atlas") == "/Atlas"
    meta = classify_path("Metadata/GridSquare_5.dm")
    assert meta is not None
    assert meta.session_root == "."


_REFERENCE_REF = re.compile(rb"Ref[ \t\r\n\x0b\x0c]*=")


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from([b"R", b"e", b"f", b"Ref", b"=", b" ", b"\t", b"\n", b"x", b"<"]), max_size=80)
)
def test_mentions_ref_matches_a_full_search(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert mentions_ref(data) == bool(_REFERENCE_REF.search(data))


def test_mentions_ref_past_many_r_bytes_and_wide_whitespace() -> None:
    # More R bytes than the memchr hops allow, then a reference with whitespace around "=".
    data = b"<R" + b"R" * 200 + b' z:Ref  \n\t  = "1"/>'
    assert mentions_ref(data)
    assert not mentions_ref(b"<ReferenceTransformation>Ref</ReferenceTransformation>")


def _image_info() -> EpuPath:
    return EpuPath(
        kind=EpuFileKind.MICROGRAPH,
        path="/s/Images-Disc1/GridSquare_7/Data/FoilHole_1_Data_2_3_20240101_120000.xml",
        micrograph_id="FoilHole_1_Data_2_3_20240101_120000",
        foilhole_id="1",
        gridsquare_id="7",
    )


def _image(custom: str, optics: str = "<Defocus>-2E-06</Defocus>", microscope_attrs: str = "") -> bytes:
    return (
        f'<MicroscopeImage xmlns="{SO}" xmlns:i="{XSI}" xmlns:z="{Z}"><uniqueID>u-1</uniqueID>'
        f'<CustomData xmlns:a="{ARR}">{custom}</CustomData>'
        f"<microscopeData{microscope_attrs}><optics>{optics}</optics></microscopeData></MicroscopeImage>"
    ).encode()


def test_reference_with_whitespace_before_equals_is_still_resolved() -> None:
    doc = _image(
        "",
        '<Defocus z:Id="9">-3E-06</Defocus><BeamShift><_x xmlns="http://schemas.datacontract.org/2004/07/'
        'Fei.Types">1</_x></BeamShift><ProbeMode z:Ref   \n  ="9" i:nil="true"/>',
    )
    result = parse_bytes(doc, _image_info())
    image = result.micrograph.image  # type: ignore[union-attr]
    assert image is not None
    assert image.probe_mode == "-3E-06"


def test_bag_entries_in_any_shape_read_like_the_usual_one() -> None:
    value = '<a:Value xmlns:b="http://www.w3.org/2001/XMLSchema" i:type="b:double">2.5E+20</a:Value>'
    usual = _image(f"<a:KeyValueOfstringanyType><a:Key>Dose</a:Key>{value}</a:KeyValueOfstringanyType>")
    swapped = _image(f"<a:KeyValueOfstringanyType>{value}<a:Key>Dose</a:Key></a:KeyValueOfstringanyType>")
    extra = _image(
        f"<a:KeyValueOfstringanyType><a:Key>Other</a:Key><a:Key>Dose</a:Key>{value}</a:KeyValueOfstringanyType>"
    )
    results = [parse_bytes(doc, _image_info()).micrograph.image for doc in (usual, swapped, extra)]  # type: ignore[union-attr]
    assert all(image is not None and image.dose_e_per_m2 == 2.5e20 for image in results)
    assert results[0] == results[1] == results[2]
    nil = _image(
        '<a:KeyValueOfstringanyType><a:Key>Dose</a:Key><a:Value i:nil="true"/></a:KeyValueOfstringanyType>'
    )
    image = parse_bytes(nil, _image_info()).micrograph.image  # type: ignore[union-attr]
    assert image is not None
    assert image.dose_e_per_m2 is None
    assert "Dose" not in image.custom_data


def test_nil_container_reads_as_empty_even_with_children() -> None:
    doc = _image("", microscope_attrs=' i:nil="true"')
    image = parse_bytes(doc, _image_info()).micrograph.image  # type: ignore[union-attr]
    assert image is not None
    assert image.defocus_m is None


def test_bad_number_still_names_the_element() -> None:
    with pytest.raises(MalformedFileError) as caught:
        parse_bytes(_image("", "<Defocus>minus two</Defocus>"), _image_info())
    assert caught.value.element == "MicroscopeImage/microscopeData/optics/Defocus"


def test_skipping_reference_checks_changes_no_model(
    epu_samples_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sample parsed with the reference checks forced on gives the models of the normal parse."""
    files = [(path, classify_path(path)) for path in sorted(epu_samples_dir.rglob("*"))]
    samples = [(path.read_bytes(), info) for path, info in files if info is not None]
    normal = [parse_bytes(data, info) for data, info in samples]
    skipped = sum(not mentions_ref(data) for data, _ in samples)
    monkeypatch.setattr("converters.parse.mentions_ref", lambda data: True)
    forced = [parse_bytes(data, info) for data, info in samples]
    assert forced == normal
    assert skipped >= 300  # the images: the files where the checks are skipped


def test_image_readers_agree_with_and_without_reference_checks(epu_samples_dir: Path) -> None:
    checked = 0
    for path in sorted(epu_samples_dir.rglob("*.xml")):
        info = classify_path(path)
        if info is None or info.kind is EpuFileKind.FRACTIONS:
            continue
        root = parse_xml(path.read_bytes(), path)
        fast = _image_metadata(Reader(root, path, has_refs=False), root)
        assert fast == _image_metadata(Reader(root, path, has_refs=True), root), path
        checked += 1
    assert checked >= 300
