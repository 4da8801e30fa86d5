"""Backend instructions, executed safely and exactly once: journal, executor, handlers, acknowledgements.

Flow: SSE ``instruction`` event -> :class:`InstructionJournal` (SQLite, written before anything runs) ->
:class:`Executor` (device lane one at a time, query lane beside it; priority critical > high > normal > low,
then sequence number) -> handler (pydantic payload model, guardrails in the device layer) -> one final
acknowledgement, journaled and retried until the backend confirms (also after reconnects and restarts).
Composed by :mod:`agent.app` (``agent.app.build_service``) or run alone with ``em-agent instructions``. See
``docs/instructions.md``.

Outcomes: unknown type, invalid payload, expired, guardrail violation, no device / no decision service
configured
-> ``declined`` (with the reason, guardrail type and details); device or decision-service error, time limit,
crash while executing ("interrupted") -> ``failed``; otherwise ``processed`` with a JSON result (sent as a
JSON string, SmartEM's ``result`` type). ``processed`` means the goal was reached: an autofocus that did not
converge and a ``find_roi`` that did not relocate are ``failed`` with their result, and ``agent.config.update``
reports as changed only what the running agent put into effect (the rest is in ``not_applied``). Units are Semphony's (mm, degrees, µm, µs) except
``microscope.control.move_stage``, which takes SmartEM/EPU metres unless its ``unit`` says otherwise.

Instruction types:

| type | lane | payload (JSON object; unknown keys are declined) | result on `processed` |
|---|---|---|---|
| `agent.status.request` | query | `{}` | status, uptime, device/decision-service configured, runtime
settings, executor counters, ingest snapshot (or null) |
| `agent.config.update` | query | at least one of `status_interval_s` (1–86400 s; alias `log_interval`),
`log_level` (DEBUG/INFO/WARNING/ERROR), `heartbeat_interval_s` (0–3600 s); other keys declined with the
allowed list | `{changed, not_applied, settings}` |
| `agent.info.datastore` | query | `{}` | ingest `datastore_info()`, or the executor's own facts without
ingest |
| `agent.info.metrics` | query | `{}` | ingest `metrics_info()` (same fallback) |
| `agent.info.errors` | query | `{}` | ingest `error_info()` (same fallback) plus recent failed/declined
instructions |
| `agent.info.orphans` | query | `{}` | ingest `orphan_info()` (same fallback) |
| `microscope.control.move_stage` | device | `stage_position {x, y, z?}` in `unit` (`"m"` default: EPU's and
SmartEM's stage unit; `"mm"`, `"um"`), `speed` `slow/normal/fast` (recorded; Semphony has no speed control) |
`{target_mm, position_mm, speed_requested}` |
| `microscope.control.take_image` | device | `image_params`: AcquisitionConfig (`fov_um`, `width`, `height`,
`dwell_us`, `scan_rotation_deg`, `detector`, `bit_depth`, `name`) | `{image_id, path, size_bytes,
metadata_path, metadata}`; saved under `<state_dir>/images/` |
| `microscope.control.reorder_gridsquares` | device | `gridsquare_ids` (EPU natural ids, `12` or
`"GridSquare_12"`), `priority`, `reason` | Athena `acquisitionOrder` records (rank 1..n) |
| `microscope.control.skip_gridsquares` | device | `gridsquare_ids`, `reason` | Athena `gridSquareSelection`
records, value `"false"` |
| `microscope.control.reorder_foilholes` | device | `gridsquare_id`, `foilhole_ids` (in order), `priority`,
`reason` | one Athena `foilHoleSelection` record on the square (listed holes `"true"`) plus `acquisitionOrder`
per hole |
| `sem.acquire` | device | AcquisitionConfig fields plus `save` (default true) | acquisition metadata;
`image_path`, `size_bytes` when saved under `<state_dir>/images/` |
| `sem.set_view_field` | device | `fov_um` (> 0, µm) | device answer |
| `sem.get_focus_params` | device | `{}` | `{wd_mm, stigm_x, stigm_y}` |
| `sem.set_focus_params` | device | at least one of `wd_mm` (mm), `stigm_x`, `stigm_y` | device answer |
| `sem.set_beam` | device | `enabled` (bool) | device answer |
| `sem.beam_on` / `sem.beam_off` | device | `{}` | device answer (beam on needs vacuum: guardrail) |
| `sem.get_metrics` | device | `{}` | metrics snapshot (beam, vacuum, optics, stage) |
| `sem.vent` / `sem.pump` | device | `{}` | device answer (vent needs the beam off: guardrail) |
| `sem.stage.get_position` | device | `latest` (bool, default false: live read) | `{x, y, z, r, t}` (mm,
degrees) |
| `sem.stage.move_to` | device | `x`, `y` (required), `z` (mm), `r` (degrees) | reached position |
| `sem.stage.move_by` | device | `dx`, `dy`, `dz` (mm), `dr`, `dt` (degrees) | reached position (relative-move
and soft-limit guardrails) |
| `sem.geometry.list` / `sem.centering.list` | device | `{}` | `{index: {name, count, unit, limits}}` |
| `sem.geometry.get` / `sem.centering.get` | device | exactly one of `name` (fuzzy, case-insensitive) or
`index` | current value(s) |
| `sem.geometry.set` / `sem.centering.set` | device | `name` or `index`, `x`, optional `y` | new value(s) |
| `sem.geometry.reset` / `sem.centering.reset` | device | `{}` | `{reset: [indices]}` (centerings: each set to
zero) |
| `sem.autofocus` | device | AutofocusConfig (`method` auto/learned/classical, `max_iters`, `perturbation_um`,
...); `auto` is learned only where validated (``agent.autofocus.policy``) | AutofocusResult (`selection`: why) |
| `sem.save_roi` | device | `name` (`[A-Za-z0-9._-]`), `spec` {`l0_fov_um`, `l1_fov_um`, `l2_fov_um`,
`l3_fov_um`, `description`}, `config` (AcquisitionConfig), `inter_level_delay_s` | SavedRoi plus `path`
(`<state_dir>/rois/<name>`) |
| `sem.find_roi` | device | `name` of a saved ROI, `stage_mode` (same_session/cross_session), `max_iters`,
`max_iters_per_level`, `px_tol`, `min_confidence` | FindRoiResult (declined when no such ROI) |
| `sem.await_human` | device | `message` | operator's answer (blocks until Continue; 24 h limit) |
"""

from agent.instructions.acks import AckDispatcher, AckSender, ApiAckSender
from agent.instructions.config import (
    ExecutorConfig,
    NotApplied,
    RuntimeConfig,
    RuntimeSettings,
    RuntimeUpdate,
    apply_root_log_level,
)
from agent.instructions.context import Call, DecisionTarget, DeviceHandle, HandlerContext
from agent.instructions.errors import InstructionDeclined, InstructionError, InstructionFailed
from agent.instructions.executor import Executor
from agent.instructions.handlers import default_registry
from agent.instructions.introspection import IngestIntrospection
from agent.instructions.journal import InstructionJournal, RecordResult
from agent.instructions.models import AckStatus, Lane, Outcome, ReceivedInstruction
from agent.instructions.registry import HandlerRegistry, HandlerSpec
from agent.instructions.service import InstructionService, InstructionStream

__all__ = [
    "AckDispatcher",
    "AckSender",
    "AckStatus",
    "ApiAckSender",
    "Call",
    "DecisionTarget",
    "DeviceHandle",
    "Executor",
    "ExecutorConfig",
    "HandlerContext",
    "HandlerRegistry",
    "HandlerSpec",
    "IngestIntrospection",
    "InstructionDeclined",
    "InstructionError",
    "InstructionFailed",
    "InstructionJournal",
    "InstructionService",
    "InstructionStream",
    "Lane",
    "NotApplied",
    "Outcome",
    "ReceivedInstruction",
    "RecordResult",
    "RuntimeConfig",
    "RuntimeSettings",
    "RuntimeUpdate",
    "apply_root_log_level",
    "default_registry",
]
