"""The demo's arms: length-control methods trained with the same config, steps, batch and seeds,
differing only in their cap schedule and reward. Each is a list of config overrides.

- ``siri``: SIRI, a cosine cap L_max -> L_min -> L_max (arXiv 2509.25176).
- ``baseline``: a fixed cap at L_max (the DAPO recipe).
- ``compress_only``: a fixed cap at L_min.
- ``thinkprune``: ThinkPrune's staged cap (arXiv 2504.01296): L_max, then halfway to L_min,
  then L_min for the rest, each stage one SIRI period long.
- ``length_penalty``: Kimi k1.5's in-group length reward (arXiv 2501.12599) at a fixed L_max:
  no cut at a short cap, a reward for being shorter than the group's other answers.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARMS", "DEFAULT_ARMS", "STUDY_ARMS", "Arm", "checkpoints_of"]


@dataclass(frozen=True)
class Arm:
    name: str
    description: str

    def overrides(self, l_max: int, l_min: int, period: int) -> list[str]:
        """The config overrides (``section.key=value``) of this arm."""
        constant = ["schedule.kind=constant", "schedule.l_min=null", "schedule.period=null"]
        if self.name == "siri":
            return ["schedule.kind=cosine", f"schedule.l_max={l_max}", f"schedule.l_min={l_min}",
                    f"schedule.period={period}"]
        if self.name == "baseline":
            return [*constant, f"schedule.l_max={l_max}"]
        if self.name == "compress_only":
            return [*constant, f"schedule.l_max={l_min}"]
        if self.name == "thinkprune":
            middle = (l_max + l_min) // 2
            return ["schedule.kind=piecewise", "schedule.l_max=null", "schedule.l_min=null", "schedule.period=null",
                    f"schedule.points=[[0, {l_max}], [{period}, {middle}], [{2 * period}, {l_min}]]"]
        if self.name == "length_penalty":
            return [*constant, f"schedule.l_max={l_max}", "reward.length_reward=kimi"]
        raise ValueError(f"unknown arm {self.name!r}")


ARMS = {arm.name: arm for arm in (
    Arm("siri", "cosine cap L_max -> L_min -> L_max (SIRI)"),
    Arm("baseline", "fixed cap L_max (DAPO)"),
    Arm("compress_only", "fixed cap L_min"),
    Arm("thinkprune", "staged cap L_max -> (L_max+L_min)/2 -> L_min, stays (ThinkPrune)"),
    Arm("length_penalty", "fixed cap L_max + in-group length reward (Kimi k1.5)"),
)}
DEFAULT_ARMS = ("siri", "baseline", "compress_only")
STUDY_ARMS = tuple(ARMS)


def checkpoints_of(arm: str) -> dict[str, str]:
    """The checkpoints an arm contributes to the comparison: checkpoint name -> the kind of
    saved checkpoint it is (SIRI: its last trough and last peak; the others: the final one)."""
    return {"siri_low": "trough", "siri_high": "peak"} if arm == "siri" else {arm: "final"}
