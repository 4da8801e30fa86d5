"""Configuration and result models of the autofocus (the Semphony ``AutofocusConfig`` / ``AutofocusResult``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AutofocusConfig", "AutofocusError", "AutofocusIteration", "AutofocusResult"]


class AutofocusError(RuntimeError):
    """The autofocus could not run (bad configuration, unusable weights, unusable images)."""


class AutofocusConfig(BaseModel):
    """How to run :func:`agent.autofocus.run_autofocus`. Defaults follow sem-reference §6, §7 and §9.

    The learned corrector needs the pixel size, patch size and WD perturbation it was trained with (stored in
    its weights file); a mismatch is an :class:`AutofocusError` rather than a silently wrong answer.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["auto", "learned", "classical"] = Field(
        "auto",
        description="'learned' needs torch; 'auto' uses it only on an instrument it is validated for (the "
        "simulator, or a positive `em-agent autofocus validate` verdict), 'classical' elsewhere.",
    )
    max_iters: int = Field(5, ge=1, le=50, description="Iteration cap (one WD ± sigma image pair each).")
    perturbation_um: float = Field(
        5.0, gt=0, le=100, description="WD perturbation sigma of the image pair, µm."
    )
    pixel_size_nm: float = Field(10.0, gt=0, description="Pixel size of the focus images (DeepFocus: 10 nm).")
    image_size_px: int = Field(256, ge=64, le=4096, description="Square focus image side, pixels.")
    # 2 µs: a 256² frame still takes only ~0.15 s, and the lower shot noise lets the stop test pass one
    # iteration earlier (at 1 µs ~7 % of runs need a fourth pair).
    dwell_us: float = Field(2.0, gt=0, le=100, description="Pixel dwell time of the focus images, µs.")
    n_patches: int = Field(16, ge=1, le=64, description="Patch pairs per image pair (DeepFocus n_consensus).")
    gain_wd: float = Field(1.0, gt=0, le=1.5, description="Fraction of the predicted WD correction applied.")
    gain_stig: float = Field(
        1.0, gt=0, le=1.5, description="Fraction of the predicted stigmator correction applied."
    )
    # The stop test reads the *predicted* correction, whose noise near focus is ~0.3 µm and ~0.05 units for
    # the shipped network; the correction that passes the test is still applied, so the final error is
    # typically well inside these tolerances.
    wd_tol_um: float = Field(
        1.0, gt=0, description="Converged when |predicted WD correction| is below this, µm."
    )
    # 0.2 units = 2 µm line-focus separation (±1 µm line foci): the same focus spread as 1 µm of WD.
    stig_tol: float = Field(
        0.2, gt=0, description="... and each |predicted stigmator correction| below this (units)."
    )
    max_wd_step_um: float = Field(
        60.0, gt=0, description="Safety cap on any single WD correction, µm (larger predictions are clipped)."
    )
    max_stig_step: float = Field(
        1.5, gt=0, description="Safety cap on any single stigmator correction (units)."
    )
    settle_s: float = Field(
        0.25, ge=0, le=10, description="Wait after each focus change (DeepFocus: 0.25 s)."
    )
    sweep_range_um: float = Field(
        60.0,
        gt=0,
        description="Classical: half-range of the first coarse WD sweep, µm (covers the start error).",
    )
    sweep_points: int = Field(9, ge=3, le=41, description="Classical: images in the coarse WD sweep.")
    stig_sweep_range: float = Field(
        2.0, gt=0, description="Classical: half-range of the first stigmator sweep."
    )
    stig_sweep_points: int = Field(7, ge=3, le=41, description="Classical: images per stigmator sweep.")
    weights_path: str | None = Field(None, description="Custom learned weights; None uses the shipped file.")


class AutofocusIteration(BaseModel):
    """One iteration: the state read, what was predicted, what was applied."""

    model_config = ConfigDict(extra="forbid")

    index: int
    wd_mm: float = Field(description="Working distance read at the start of the iteration.")
    stigm_x: float
    stigm_y: float
    predicted_dwd_um: float = Field(description="Predicted WD correction, µm.")
    predicted_dstig_x: float
    predicted_dstig_y: float
    spread_wd_um: float = Field(0.0, description="Spread of the per-patch WD predictions (learned), µm.")
    applied_dwd_um: float
    applied_dstig_x: float
    applied_dstig_y: float
    limited: bool = Field(description="True when a safety cap clipped the correction.")
    images: int = Field(description="Images acquired in this iteration.")
    elapsed_s: float = Field(description="Wall time of the iteration.")
    cpu_s: float = Field(description="CPU time of this process during the iteration.")


class AutofocusResult(BaseModel):
    """Outcome of an autofocus run, with the per-iteration trace."""

    model_config = ConfigDict(extra="forbid")

    converged: bool
    method: Literal["learned", "classical"]
    iterations: int
    images: int
    initial: dict[str, float] = Field(description="{wd_mm, stigm_x, stigm_y} before the run.")
    final: dict[str, float] = Field(description="{wd_mm, stigm_x, stigm_y} after the run.")
    trace: list[AutofocusIteration]
    message: str
    elapsed_s: float
    selection: str = Field("", description="Which method ran and why (for 'auto': the validation behind it).")
