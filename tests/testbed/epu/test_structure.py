"""Generated files against real EPU samples: same root element, namespaces and element paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from testbed.epu import Manifest, generate

DLS = "DiamondLightSource__smartem-decisions/docs/assets/metadata_spa_acquisition"
EMH = "kylelmorris__EMharvest/_repo_data"
EMH_ATLAS = f"{EMH}/atlas/Supervisor_20230919_115905_Atlas_bi23047-106"
EMH_SQUARE = f"{EMH}/Supervisor_20230919_140141_84_bi23047-106_grid1/Images-Disc1/GridSquare_19493759"
REAL = {
    "session": f"{DLS}/EPU_session/EpuSession.dm",
    "gridsquare_metadata": f"{DLS}/GridSquare_4590776.dm",
    "atlas": f"{DLS}/Atlas/Supervisor_20240404_093820_Pete_Miriam_HexAuFoil/Sample4/Atlas/Atlas.dm",
    "gridsquare_image": f"{EMH_SQUARE}/GridSquare_20230919_140816.xml",
    "foilhole_image": "DiamondLightSource__smartem-decisions/tests/testdata/epu-dir-example/Images-Disc1/"
    "GridSquare_8999138/FoilHoles/FoilHole_9015889_20250108_154715.xml",
    "micrograph": f"{EMH_SQUARE}/Data/FoilHole_19513699_Data_19508496_19508498_20230919_154056.xml",
    "atlas_tile": f"{EMH_ATLAS}/Sample3/Atlas/Tile_19494742_0_19494735.xml",
    "atlas_image": f"{EMH_ATLAS}/Sample3/Atlas/Atlas_19494735.xml",
    "sample": f"{EMH_ATLAS}/Sample3/Sample.dm",
    "screening_session": f"{EMH_ATLAS}/ScreeningSession.dm",
}
_PAIR = re.compile(r"^(KeyValuePairOf[A-Za-z]+?)(_?[A-Za-z0-9]{6,}(_P)?)?$")


def _generated(out: Path, manifest: Manifest) -> dict[str, Path]:
    session = out / manifest.acquisitions[0].session_dir
    square = next(s for s in manifest.gridsquares if s.imaged)
    hole = next(h for h in manifest.foilholes if h.imaged)
    atlas = out / manifest.atlases[0].path
    tile = manifest.atlas_tiles[0]
    return {
        "session": session / "EpuSession.dm",
        "gridsquare_metadata": session / "Metadata" / f"GridSquare_{square.gridsquare_id}.dm",
        "atlas": atlas,
        "gridsquare_image": out / str(square.image_path),
        "foilhole_image": out / hole.image_paths[-1],
        "micrograph": out / manifest.micrographs[0].path,
        "atlas_tile": atlas.parent / f"{tile.base_filename}.xml",
        "atlas_image": atlas.parent / f"Atlas_{manifest.atlases[0].atlas_id}.xml",
        "sample": atlas.parent.parent / "Sample.dm",
        "screening_session": atlas.parent.parent.parent / "ScreeningSession.dm",
    }


def _structure(path: Path) -> tuple[str, set[str], set[str]]:
    """Root tag, namespace URIs used by elements, and element paths (dictionary pair hashes folded)."""
    root = etree.parse(str(path)).getroot()
    paths: set[str] = set()
    namespaces: set[str] = set()

    def walk(el: etree._Element, prefix: str) -> None:
        qname = etree.QName(el)
        local = (
            _PAIR.sub(r"\1", qname.localname)
            if qname.localname.startswith("KeyValuePairOf")
            else qname.localname
        )
        namespaces.add(qname.namespace or "")
        here = f"{prefix}/{{{qname.namespace or ''}}}{local}"
        paths.add(here)
        for child in el:
            if isinstance(child.tag, str):
                walk(child, here)

    walk(root, "")
    return str(root.tag), namespaces, paths


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("structure") / "visit"
    return _generated(out, generate(out, seed=1))


@pytest.mark.samples
@pytest.mark.parametrize("kind", sorted(REAL))
def test_generated_file_has_the_structure_of_a_real_one(
    epu_samples_dir: Path, generated: dict[str, Path], kind: str
) -> None:
    real_root, real_ns, real_paths = _structure(epu_samples_dir / REAL[kind])
    gen_root, gen_ns, gen_paths = _structure(generated[kind])
    assert gen_root == real_root
    assert gen_ns <= real_ns, f"namespaces not in the real file: {gen_ns - real_ns}"
    assert not gen_paths - real_paths, (
        f"element paths not in the real file: {sorted(gen_paths - real_paths)[:5]}"
    )
    # Not a trivial subset: the generated file covers most of the real structure.
    assert len(gen_paths & real_paths) >= 0.85 * len(real_paths)


def test_raw_form_matches_epu(generated: dict[str, Path]) -> None:
    for kind, path in generated.items():
        raw = path.read_bytes()
        assert not raw.startswith(b"<?xml"), kind
        assert b"\n" not in raw, kind
    # Prefixes vary as the serializer allocates them: System.Drawing appears as several prefixes in one file.
    text = generated["gridsquare_metadata"].read_text()
    prefixes = set(re.findall(r'xmlns:(\w)="http://schemas.datacontract.org/2004/07/System.Drawing"', text))
    assert len(prefixes) >= 2
    assert 'z:Ref="' in generated["session"].read_text()
    assert '<_items z:Id="' in generated["session"].read_text()
    assert '<SampleXml i:nil="true"/>' in generated["session"].read_text()
