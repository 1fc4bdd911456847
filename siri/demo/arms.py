"""The demo's arms: length-control methods trained with the same config, steps, batch and seeds,
differing only in their cap schedule and reward. Each carries its config overrides as data.

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

__all__ = ["ARMS", "DEFAULT_ARMS", "STUDY_ARMS", "STUDY_SEEDS", "Arm", "checkpoint_title", "checkpoints_of"]


_CONSTANT = ("schedule.kind=constant", "schedule.l_min=null", "schedule.period=null")


@dataclass(frozen=True)
class Arm:
    """One arm: its name, a one-line description, its config overrides as
    ``section.key=value`` templates over ``{l_max}``, ``{l_min}``, ``{period}``, ``{l_mid}``
    (``(l_max + l_min) // 2``) and ``{two_periods}`` (``2 * period``), and the short title
    tables give it."""

    name: str
    description: str
    override_templates: tuple[str, ...]
    title: str = ""

    def overrides(self, l_max: int, l_min: int, period: int) -> list[str]:
        """The config overrides (``section.key=value``) of this arm."""
        values = {"l_max": l_max, "l_min": l_min, "period": period, "l_mid": (l_max + l_min) // 2,
                  "two_periods": 2 * period}
        return [template.format(**values) for template in self.override_templates]


ARMS = {arm.name: arm for arm in (
    Arm("siri", "cosine cap L_max -> L_min -> L_max (SIRI)",
        ("schedule.kind=cosine", "schedule.l_max={l_max}", "schedule.l_min={l_min}", "schedule.period={period}"),
        "SIRI"),
    Arm("baseline", "fixed cap L_max (DAPO)", (*_CONSTANT, "schedule.l_max={l_max}"), "baseline (fixed L_max)"),
    Arm("compress_only", "fixed cap L_min", (*_CONSTANT, "schedule.l_max={l_min}"), "compress-only (fixed L_min)"),
    Arm("thinkprune", "staged cap L_max -> (L_max+L_min)/2 -> L_min, stays (ThinkPrune)",
        ("schedule.kind=piecewise", "schedule.l_max=null", "schedule.l_min=null", "schedule.period=null",
         "schedule.points=[[0, {l_max}], [{period}, {l_mid}], [{two_periods}, {l_min}]]"), "ThinkPrune (staged)"),
    Arm("length_penalty", "fixed cap L_max + in-group length reward (Kimi k1.5)",
        (*_CONSTANT, "schedule.l_max={l_max}", "reward.length_reward=kimi"), "length penalty (Kimi)"),
)}
DEFAULT_ARMS = ("siri", "baseline", "compress_only")
STUDY_ARMS = tuple(ARMS)
#: Seeds of ``siri demo --study``: a paired t test over them has 4 degrees of freedom (a
#: difference must pass 2.78 standard errors at the 5% level; with 3 seeds it would be 4.30).
STUDY_SEEDS = 5


def checkpoints_of(arm: str) -> dict[str, str]:
    """The checkpoints an arm contributes to the comparison: checkpoint name -> the kind of
    saved checkpoint it is (SIRI: its last trough and last peak; the others: the final one)."""
    return {"siri_low": "trough", "siri_high": "peak"} if arm == "siri" else {arm: "final"}


_SIRI_TITLES = {"base": "base", "siri_low": "SIRI-low (last trough)", "siri_high": "SIRI-high (last peak)"}


def checkpoint_title(name: str) -> str:
    """A compared checkpoint's (or an arm's) title in tables: "SIRI-low (last trough)",
    "baseline (fixed L_max)", ...; an unknown name is its own title."""
    if name in _SIRI_TITLES:
        return _SIRI_TITLES[name]
    return ARMS[name].title or name if name in ARMS else name
