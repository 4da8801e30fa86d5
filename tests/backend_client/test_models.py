"""Every wire model's fields agree with the contract tables of smartem-reference.md (section 3 and the agent
communication sections), and the package exports what it documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import backend_client
from backend_client import models
from tests.conftest import skip_or_fail

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "docs" / "smartem-reference.md"


def _reference_text() -> str:
    """The SmartEM reference; skips (fails under EM_AGENT_REQUIRE_REFERENCE_DOCS=1) when it is absent."""
    if not REFERENCE.is_file():
        skip_or_fail("EM_AGENT_REQUIRE_REFERENCE_DOCS", f"{REFERENCE} not available")
    return REFERENCE.read_text(encoding="utf-8")


def _expand(token: str) -> list[str]:
    """``stage_position_x/y/z`` -> three names; ``size_width/height`` -> two."""
    if "/" not in token:
        return [token]
    head, *alternatives = token.split("/")
    stem, _, _first = head.rpartition("_")
    return [head] + [f"{stem}_{alt}" for alt in alternatives] if stem else [head]


def _names(cell: str) -> list[str]:
    cell = re.sub(r"\[.*?\]", "", cell)  # nested models (atlas tiles) are checked separately
    cell = cell.split("∈")[0]  # "`status` ∈ `received`, ...": the values are not fields
    cell = cell.split(". No ")[0]  # "No `micrograph_id` is sent": a non-field
    cell = cell.split("; `extra=")[0]  # the model config, not a field
    names: list[str] = []
    for token in re.findall(r"`([a-z_/]+)(?:[:= ][^`]*)?`", cell):
        names.extend(_expand(token))
    return names


def _contract() -> dict[str, tuple[list[str], list[str]]]:
    text = _reference_text()
    section = text[text.index("## 3. Request models") : text.index("## 4. Agent sessions")]
    table: dict[str, tuple[list[str], list[str]]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| (.*?) \| (.*) \|$", line)
        if match:
            table[match.group(1)] = (_names(match.group(2)), _names(match.group(3)))
    return table


MODELS: dict[str, type[BaseModel]] = {
    "AcquisitionCreateRequest": models.AcquisitionCreateRequest,
    "GridCreateRequest": models.GridCreateRequest,
    "AtlasCreateRequest": models.AtlasCreateRequest,
    "GridSquarePositionRequest": models.GridSquarePositionRequest,
    "GridSquareCreateRequest": models.GridSquareCreateRequest,
    "FoilHoleCreateRequest": models.FoilHoleCreateRequest,
    "MicrographCreateRequest": models.MicrographCreateRequest,
    "AgentLogBatchRequest": models.AgentLogBatchRequest,
    "AgentInstructionAcknowledgement": models.AgentInstructionAcknowledgement,
}


def test_reference_table_lists_every_model() -> None:
    assert set(_contract()) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_fields_match_the_contract(name: str) -> None:
    required, optional = _contract()[name]
    model = MODELS[name]
    fields = model.model_fields
    for field in required:
        assert field in fields, f"{name}.{field} missing"
        assert fields[field].is_required(), f"{name}.{field} must be required"
    for field in optional:
        assert field in fields, f"{name}.{field} missing"
        assert not fields[field].is_required(), f"{name}.{field} must be optional"
    if name not in (
        "MicrographCreateRequest",
    ):  # "motion-correction / CTF / particle fields" are not itemised
        assert set(fields) == set(required) | set(optional), f"{name} has fields beyond the contract"


def test_nested_atlas_tile_and_log_entry_fields() -> None:
    text = _reference_text()
    tile = re.search(r"AtlasTileCreateRequest\{([^}]*)\}", str(text))
    assert tile is not None
    assert set(models.AtlasTileCreateRequest.model_fields) == {f.strip() for f in tile.group(1).split(",")}
    assert set(models.AgentLogEntry.model_fields) == {"timestamp", "level", "logger_name", "message"}


def test_ack_body_is_exactly_the_five_fields_and_forbids_extras() -> None:
    assert set(models.AgentInstructionAcknowledgement.model_fields) == {
        "status", "result", "error_message", "processing_time_ms", "processed_at",
    }  # fmt: skip
    with pytest.raises(ValueError, match="extra"):
        models.AgentInstructionAcknowledgement.model_validate({"status": "processed", "retry": 1})
    with pytest.raises(ValueError, match="status"):
        models.AgentInstructionAcknowledgement.model_validate({"status": "done"})


def test_response_models_tolerate_extra_fields_and_enum_case() -> None:
    grid = models.GridResponse.model_validate({"uuid": "g", "status": "none", "new_column": 1})
    assert grid.status == "none"
    event = models.InstructionEvent.model_validate(
        {"type": "instruction", "instruction_id": "i", "instruction_type": "t", "extra_field": 5}
    )
    assert event.model_dump()["extra_field"] == 5


def test_exported_members_are_sorted_and_complete() -> None:
    assert backend_client.__all__ == sorted(backend_client.__all__)
    public = {name for name in vars(backend_client) if not name.startswith("_")}
    modules = {
        "acks",
        "amqp",
        "amqp_loop",
        "amqp_messages",
        "async_client",
        "auth",
        "client",
        "errors",
        "heartbeat",
        "models",
        "operations",
        "paths",
        "retry",
        "sse",
        "sse_stream",
    }
    assert public - modules == set(backend_client.__all__)
