"""ROI capture and the manifest round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.roi import RoiError, RoiImaging, RoiSpec, load_level_image, load_roi_from_fs, save_roi
from agent.roi.bench import StageBench

SMALL = RoiImaging(width=96, height=64, dwell_us=1.0)


def test_spec_levels_skip_zero_and_must_shrink() -> None:
    spec = RoiSpec(l0_fov_um=100, l2_fov_um=10)
    assert spec.levels() == [("l0", 100.0), ("l2", 10.0)]
    with pytest.raises(ValueError, match="shrink"):
        RoiSpec(l0_fov_um=10, l1_fov_um=20)
    with pytest.raises(ValueError):
        RoiSpec(l0_fov_um=0)


def test_manifest_round_trip(tmp_path: Path) -> None:
    bench = StageBench(seed=1, stage_mm=(1.5, -2.0))
    bench.set_image_rotation_rad(0.1)
    target = tmp_path / "roi-a"
    saved = save_roi(
        bench,
        "grid-7",
        RoiSpec(l0_fov_um=80, l1_fov_um=20),
        config=SMALL,
        target_dir=target,
        inter_level_delay_s=0,
    )
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["format"] == "em-agent-roi/1"
    assert [lv["image"] for lv in manifest["levels"]] == ["l0.png", "l1.png"]  # relative on disk
    level = manifest["levels"][1]
    assert level["fov_um"] == 20
    assert level["pixel_size_nm"] == pytest.approx(20e3 / 96)
    assert level["stage_pose"]["x"] == 1.5
    assert level["image_rotation_rad"] == pytest.approx(0.1)
    assert level["acquired_at"].endswith("+00:00")
    for path in (target, target / "manifest.json"):
        loaded = load_roi_from_fs(path)
        assert loaded.model_dump(exclude={"directory"}) == saved.model_dump(exclude={"directory"})
        assert Path(loaded.levels[0].image).is_absolute()
    # Pixels survive as 16-bit PNGs.
    image = load_level_image(loaded.levels[0])
    assert image.shape == (64, 96)
    assert image.dtype == np.float32
    assert np.abs(image - saved._images.get("l0", image)).max() <= 1.0 / 65535 + 1e-7


def test_save_in_memory_and_refuse_overwrite(tmp_path: Path) -> None:
    bench = StageBench(seed=2)
    roi = save_roi(bench, "mem", RoiSpec(l0_fov_um=50), config=SMALL, inter_level_delay_s=0)
    assert roi.directory is None
    assert set(roi._images) == {"l0"}
    save_roi(bench, "a", RoiSpec(l0_fov_um=50), config=SMALL, target_dir=tmp_path, inter_level_delay_s=0)
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(RoiError, match="already exists"):
        save_roi(bench, "b", RoiSpec(l0_fov_um=50), config=SMALL, target_dir=tmp_path, inter_level_delay_s=0)
    assert (tmp_path / "manifest.json").read_bytes() == before
    with pytest.raises(RoiError, match="name"):
        save_roi(bench, " ", RoiSpec(l0_fov_um=50), config=SMALL, inter_level_delay_s=0)


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RoiError, match="no ROI manifest"):
        load_roi_from_fs(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RoiError, match="unreadable"):
        load_roi_from_fs(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RoiError, match="invalid"):
        load_roi_from_fs(tmp_path)
    good = tmp_path / "good"
    save_roi(
        StageBench(seed=3), "g", RoiSpec(l0_fov_um=50), config=SMALL, target_dir=good, inter_level_delay_s=0
    )
    (good / "l0.png").unlink()
    with pytest.raises(RoiError, match="missing"):
        load_roi_from_fs(good)


def test_package_imports_without_opencv_and_names_the_extra(tmp_path: Path) -> None:
    target = tmp_path / "roi"
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from agent.roi import RoiError, find_roi, RoiSpec, save_roi\n"
        "from agent.roi.bench import StageBench\n"
        "try:\n"
        f"    save_roi(StageBench(), 'x', RoiSpec(l0_fov_um=10), target_dir={str(target)!r})\n"
        "except RoiError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "em-agent[roi]" in out.stdout
    assert not target.exists()
