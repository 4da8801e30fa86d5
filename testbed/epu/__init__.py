"""EPU session generator, ground-truth manifest, and epuplayer-compatible recorder/replayer.

* :func:`generate` / :class:`SessionGenerator` write a synthetic EPU visit (presets ``small``, ``medium``,
  ``large``; timing, disorder and partial-write modes) and its :class:`Manifest` (``<out>/manifest.json``).
* :mod:`testbed.epu.compare` checks a manifest against parsed entities or the testbed backend.
* :mod:`testbed.epu.recording` reads and writes epuplayer recordings; :mod:`testbed.epu.replayer` replays them,
  and :mod:`testbed.epu.recorder` records live folders.
"""

from testbed.epu.compare import ManifestDiff, compare_with_backend, compare_with_files
from testbed.epu.generator import (
    GeneratorConfig,
    SessionGenerator,
    TimingMode,
    WriteEvent,
    generate,
)
from testbed.epu.manifest import (
    KINDS,
    MANIFEST_NAME,
    Manifest,
    ManifestAcquisition,
    ManifestAtlas,
    ManifestAtlasTile,
    ManifestCounts,
    ManifestFoilHole,
    ManifestGrid,
    ManifestGridSquare,
    ManifestMicrograph,
    ManifestTileSquarePosition,
)
from testbed.epu.plan import PRESETS, PresetSpec, SessionPlan
from testbed.epu.planner import plan_session
from testbed.epu.recorder import Recorder
from testbed.epu.recording import EPUEvent, Recording, RecordingError
from testbed.epu.replayer import Replayer

__all__ = [
    "KINDS",
    "MANIFEST_NAME",
    "PRESETS",
    "EPUEvent",
    "GeneratorConfig",
    "Manifest",
    "ManifestAcquisition",
    "ManifestAtlas",
    "ManifestAtlasTile",
    "ManifestCounts",
    "ManifestDiff",
    "ManifestFoilHole",
    "ManifestGrid",
    "ManifestGridSquare",
    "ManifestMicrograph",
    "ManifestTileSquarePosition",
    "PresetSpec",
    "Recorder",
    "Recording",
    "RecordingError",
    "Replayer",
    "SessionGenerator",
    "SessionPlan",
    "TimingMode",
    "WriteEvent",
    "compare_with_backend",
    "compare_with_files",
    "generate",
    "plan_session",
]
