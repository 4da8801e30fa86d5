"""``semphony.systems``: the device classes of the reference, with autofocus and ROI navigation.

The device operations come from :mod:`agent.devices.semphony.systems` (synchronous wrappers over the device
layer's asynchronous facade). ``imaging.autofocus``, ``imaging.save_roi`` and ``imaging.find_roi`` are added
here because they run algorithms (``agent.autofocus``, ``agent.roi``) that sit above the device layer; they run
those algorithms' coroutines over the facade on the client's loop, as the daemon runs them on its own.
"""

from __future__ import annotations

from pathlib import Path

from agent.autofocus.loop import run_autofocus_async
from agent.autofocus.models import AutofocusConfig, AutofocusResult
from agent.devices.models import AcquisitionConfig
from agent.devices.semphony import systems as _sdk
from agent.devices.semphony.systems import (
    Centerings,
    DeformationDevice,
    GeometricTransformations,
    ImagingChamber,
    ImagingStageInterface,
)
from agent.roi.models import FindRoiResult, RoiSpec, SavedRoi
from agent.roi.relocate import find_roi_async, save_roi_async

__all__ = [
    "Centerings",
    "DeformationDevice",
    "GeometricTransformations",
    "ImagingChamber",
    "ImagingDevice",
    "ImagingInterface",
    "ImagingStageInterface",
]


class ImagingInterface(_sdk.ImagingInterface):
    """``device.imaging``: acquisition, focus, field of view, beam, metrics, prompts, ROI and autofocus."""

    _device: ImagingDevice

    def autofocus(self, config: AutofocusConfig, *, state_dir: str | Path | None = None) -> AutofocusResult:
        """Iterative autofocus and auto-stigmation (``agent.autofocus``; the learned corrector needs torch).

        With ``method = "auto"`` the learned corrector runs only if it is validated for this backend and
        instrument: built in for the simulator, or a verdict ``em-agent autofocus validate`` recorded under
        ``state_dir``; otherwise the classical sweep runs (the result's ``selection`` says which and why).
        """
        device = self._device
        device._decline_if_unsupported("autofocus")
        # Reading the identity costs a metrics call, so only when the policy needs it.
        instrument = device.instrument_key() if config.method == "auto" else None
        return device._call(
            run_autofocus_async(
                device._scope.focus_ops(),
                config,
                instrument=instrument,
                state_dir=Path(state_dir) if state_dir is not None else None,
            )
        )

    def save_roi(
        self,
        name: str,
        spec: RoiSpec,
        *,
        config: AcquisitionConfig | None = None,
        target_dir: str | None = None,
        inter_level_delay_s: float = 1.0,
    ) -> SavedRoi:
        """Capture a pyramidal ROI at the current stage position (``agent.roi``; matching needs OpenCV)."""
        device = self._device
        return device._call(
            save_roi_async(
                device._scope.roi_ops(),
                name,
                spec,
                config=config,
                target_dir=target_dir,
                inter_level_delay_s=inter_level_delay_s,
            )
        )

    def find_roi(
        self,
        roi_path: str,
        *,
        stage_mode: str = "same_session",
        initial_pose: dict[str, float] | None = None,
        start_level: str | None = None,
        base_config: AcquisitionConfig | None = None,
        max_initial_fov_um: float | None = None,
        max_zoom_out_retries: int = 0,
        max_iters: int = 8,
        max_iters_per_level: int = 4,
        px_tol: float = 15.0,
        rot_tol_rad: float = 0.017,
        scale_tol: float = 0.02,
        gain_xy: float = 0.8,
        gain_rot: float = 0.8,
        gain_fov: float = 0.8,
        min_confidence: float = 0.25,
    ) -> FindRoiResult:
        """Navigate back to a saved ROI by correlative matching (``agent.roi``; needs OpenCV)."""
        device = self._device
        device._decline_if_unsupported("find_roi")
        return device._call(
            find_roi_async(
                device._scope.roi_ops(),
                roi_path,
                stage_mode=stage_mode,
                initial_pose=initial_pose,
                start_level=start_level,
                base_config=base_config,
                max_initial_fov_um=max_initial_fov_um,
                max_zoom_out_retries=max_zoom_out_retries,
                max_iters=max_iters,
                max_iters_per_level=max_iters_per_level,
                px_tol=px_tol,
                rot_tol_rad=rot_tol_rad,
                scale_tol=scale_tol,
                gain_xy=gain_xy,
                gain_rot=gain_rot,
                gain_fov=gain_fov,
                min_confidence=min_confidence,
            )
        )


class ImagingDevice(_sdk.ImagingDevice):
    """An imaging device (SEM): ``.imaging`` (with autofocus and ROI navigation), ``.stage``, ``.chamber``."""

    _imaging_class = ImagingInterface
    imaging: ImagingInterface
