"""Guardrails: each rule on its own, then enforced on the client and again on the server."""

from __future__ import annotations

from typing import Any

import pytest

from agent.devices.capabilities import Capability
from agent.devices.guardrails import (
    GUARDRAIL_BEAM_ON_DURING_VENT,
    GUARDRAIL_FOV_RANGE,
    GUARDRAIL_RELATIVE_MOVE_LIMIT,
    GUARDRAIL_STAGE_SOFT_LIMITS,
    GUARDRAIL_VACUUM_REQUIRED,
    GUARDRAIL_WORKING_DISTANCE_RANGE,
    DeviceState,
    ImagingGuardrails,
    StageSoftLimits,
    check_capability,
    needs_state,
)
from agent.devices.semphony import (
    AcquisitionConfig,
    ImagingDevice,
    SemphonyApiError,
    SemphonyGuardrailException,
    Session,
)
from tests.agent.devices.conftest import Rig

RULES = ImagingGuardrails()


def state(**overrides: Any) -> DeviceState:
    values: dict[str, Any] = {
        "vacuum": "pumped",
        "beam_on": True,
        "fov_um": 100.0,
        "x_mm": 0.0,
        "y_mm": 0.0,
        "z_mm": 10.0,
        "r_deg": 0.0,
        "t_deg": 0.0,
    }
    return DeviceState(**(values | overrides))


def refused(
    capability: str, payload: dict[str, Any], current: DeviceState | None = None
) -> SemphonyGuardrailException:
    with pytest.raises(SemphonyGuardrailException) as err:
        check_capability(RULES, capability, payload, current)
    return err.value


def test_vacuum_required_for_beam_on() -> None:
    err = refused(Capability.SET_BEAM, {"enabled": True}, state(vacuum="venting", beam_on=False))
    assert err.guardrail_type == GUARDRAIL_VACUUM_REQUIRED
    assert err.details["vacuum"] == "venting"
    check_capability(RULES, Capability.SET_BEAM, {"enabled": False}, None)  # beam off is always allowed
    check_capability(RULES, Capability.SET_BEAM, {"enabled": True}, state())


def test_beam_off_before_vent() -> None:
    assert refused(Capability.VENT, {}, state(beam_on=True)).guardrail_type == GUARDRAIL_BEAM_ON_DURING_VENT
    check_capability(RULES, Capability.VENT, {}, state(beam_on=False))


def test_stage_soft_limits_absolute() -> None:
    err = refused(Capability.STAGE_MOVE_TO, {"x": 41.0, "y": 0.0})
    assert err.guardrail_type == GUARDRAIL_STAGE_SOFT_LIMITS
    assert err.details == {"axis": "x", "target": 41.0, "min": -40.0, "max": 40.0, "move": "absolute"}
    assert refused(Capability.STAGE_MOVE_TO, {"x": 0, "y": 0, "z": -1}).details["axis"] == "z"
    check_capability(RULES, Capability.STAGE_MOVE_TO, {"x": 40.0, "y": -40.0, "r": 700.0}, None)


def test_stage_soft_limits_relative() -> None:
    near_edge = state(x_mm=39.99, fov_um=100.0)
    err = refused(Capability.STAGE_MOVE_DELTA, {"dx": 0.02, "dy": 0.0}, near_edge)
    assert err.guardrail_type == GUARDRAIL_STAGE_SOFT_LIMITS
    assert err.details["move"] == "relative"
    assert refused(Capability.STAGE_MOVE_DELTA, {"dt": 70.0}, state()).details["axis"] == "t"


def test_relative_move_limited_to_fraction_of_fov() -> None:
    err = refused(Capability.STAGE_MOVE_DELTA, {"dx": 0.04, "dy": 0.03}, state(fov_um=80.0))
    assert err.guardrail_type == GUARDRAIL_RELATIVE_MOVE_LIMIT
    assert err.details["distance_um"] == pytest.approx(50.0)
    assert err.details["limit_um"] == pytest.approx(40.0)
    check_capability(RULES, Capability.STAGE_MOVE_DELTA, {"dx": 0.03, "dy": 0.02}, state(fov_um=80.0))
    loose = ImagingGuardrails(max_relative_move_fov_fraction=None, stage_limits=None)
    assert not needs_state(loose, Capability.STAGE_MOVE_DELTA, {"dx": 5.0})
    check_capability(loose, Capability.STAGE_MOVE_DELTA, {"dx": 5.0}, None)


def test_working_distance_range() -> None:
    err = refused(Capability.SET_FOCUS_PARAMS, {"wd_mm": 0.5})
    assert err.guardrail_type == GUARDRAIL_WORKING_DISTANCE_RANGE
    assert err.details == {"parameter": "wd_mm", "value": 0.5, "min": 1.0, "max": 30.0}
    check_capability(RULES, Capability.SET_FOCUS_PARAMS, {"stigm_x": 3.0}, None)


def test_fov_range_on_set_and_acquire() -> None:
    assert refused(Capability.SET_VIEW_FIELD, {"fov_um": 0.1}).guardrail_type == GUARDRAIL_FOV_RANGE
    assert refused(Capability.ACQUIRE, {"fov_um": 3000.0}).guardrail_type == GUARDRAIL_FOV_RANGE
    check_capability(RULES, Capability.ACQUIRE, {"fov_um": None}, None)


def test_no_guardrails_and_missing_state() -> None:
    check_capability(None, Capability.VENT, {}, None)
    with pytest.raises(ValueError, match="needs the device state"):
        check_capability(RULES, Capability.VENT, {}, None)
    with pytest.raises(ValueError, match="metrics"):
        DeviceState.from_metrics({"beam": {}})


def test_invalid_limits_rejected() -> None:
    with pytest.raises(ValueError):
        StageSoftLimits(x_mm=(5.0, -5.0))
    with pytest.raises(ValueError):
        ImagingGuardrails(max_relative_move_fov_fraction=0)


EVERY_BACKEND = pytest.mark.parametrize("rig", ["simulator", "http", "openfibsem"], indirect=True)


def accepted(rig: Rig) -> list[str]:
    """Capabilities the control server let through to the instrument, in order."""
    return [capability for _, capability in rig.core.invocations]


@EVERY_BACKEND
def test_client_side_refusal_never_reaches_the_device(sem: ImagingDevice, rig: Rig) -> None:
    fov_um = sem.imaging.get_metrics()["optics"]["fov_um"]
    before = sem.stage.get_pos()
    with pytest.raises(SemphonyGuardrailException) as vent:
        sem.chamber.vent()
    assert vent.value.guardrail_type == GUARDRAIL_BEAM_ON_DURING_VENT
    with pytest.raises(SemphonyGuardrailException) as far:
        sem.stage.move_to(45.0, 0.0)
    assert far.value.guardrail_type == GUARDRAIL_STAGE_SOFT_LIMITS
    with pytest.raises(SemphonyGuardrailException) as jump:
        sem.stage.move_delta(dx=0.2)
    assert jump.value.details["fov_um"] == fov_um
    with pytest.raises(SemphonyGuardrailException):
        sem.imaging.set_focus_params(wd_mm=45.0)
    with pytest.raises(SemphonyGuardrailException):
        sem.imaging.acquire(AcquisitionConfig(fov_um=0.2, width=64, height=64))
    sem.imaging.set_beam(False)
    sem.chamber.vent()
    with pytest.raises(SemphonyGuardrailException) as beam:
        sem.imaging.set_beam(True)
    assert beam.value.details["vacuum"] == "vented"
    assert accepted(rig) == ["SetBeam", "Vent"]
    assert sem.stage.get_pos() == before
    assert sem.imaging.get_focus_params()["wd_mm"] != 45.0


@EVERY_BACKEND
def test_server_enforces_guardrails_too(sem: ImagingDevice, rig: Rig, session: Session) -> None:
    # Straight to the control server, bypassing the SDK's client-side check.
    with pytest.raises(SemphonyGuardrailException) as err:
        rig.client.invoke_capability(session.run.id, session.id, Capability.VENT)
    assert err.value.guardrail_type == GUARDRAIL_BEAM_ON_DURING_VENT
    assert err.value.details["beam_on"] is True
    with pytest.raises(SemphonyGuardrailException) as move:
        rig.client.invoke_capability(session.run.id, session.id, Capability.STAGE_MOVE_DELTA, {"dx": 1.0})
    assert move.value.guardrail_type == GUARDRAIL_RELATIVE_MOVE_LIMIT
    with pytest.raises(SemphonyApiError) as bad:  # a malformed value is a 400, not a guardrail bypass
        rig.client.invoke_capability(session.run.id, session.id, Capability.STAGE_MOVE_TO, {"x": "x", "y": 0})
    assert bad.value.status_code == 400
    assert accepted(rig) == []


def test_session_without_guardrails_allows_everything(rig: Rig) -> None:
    with rig.client.run("free").session() as session:
        device = ImagingDevice(rig.client, device_slug="sem-001")
        device.attach(session)
        assert device.chamber.vent()["beam_switched_off"] is True  # the HV interlock still acts
        assert device.stage.move_delta(dx=2.0)["x"] == 2.0
