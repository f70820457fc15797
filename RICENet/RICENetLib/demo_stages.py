"""Which stages of ``ricenet demo`` can be reused: the options that made each one, recorded and compared.

The demo has three stages, each feeding the next: the synthetic ``cohort``,
the trained ``bundle`` and the held-out ``prediction``. After a stage is made,
the options that decide its result are written to ``demo.json`` in the demo
folder. On the next run a stage is reused only when its output is there and
was made with the same options; otherwise it is redone, and so is every stage
after it, and the reason is said.

>>> wanted = {"cohort": {"cases": 20}, "bundle": {"epochs": 10}, "prediction": {"occlusion_mask": 8}}
>>> recorded = {"cohort": {"cases": 20}, "bundle": {"epochs": 5}, "prediction": {"occlusion_mask": 8}}
>>> [(d.stage, d.reuse) for d in plan_stages(recorded, wanted, dict.fromkeys(STAGES, True))]
[('cohort', True), ('bundle', False), ('prediction', False)]
>>> plan_stages(recorded, wanted, dict.fromkeys(STAGES, True))[1].reason
'--epochs changed: 5 → 10'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

STAGES = ("cohort", "bundle", "prediction")
MANIFEST_NAME = "demo.json"
MANIFEST_FORMAT = 1
#: Options of a stage that are ``ricenet demo`` flags (the others are fixed by the demo's code).
FLAGS = ("cases", "new_patients", "classes", "skull_strip", "seed", "folds", "epochs", "lr", "input_size", "spacing",
         "widen_factor",
         "occlusion_mask", "occlusion_stride")


@dataclass(frozen=True)
class StageDecision:
    """Reuse a stage's output or make it again, and why (a line for the user)."""

    stage: str
    reuse: bool
    reason: str


def _name(key: str) -> str:
    return "--" + key.replace("_", "-") if key in FLAGS else key


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``--epochs changed: 5 → 10; --seed changed: 0 → 1`` (keys in ``new`` order, then removed ones)."""
    keys = list(new) + [k for k in old if k not in new]
    parts = [f"{_name(k)} changed: {old.get(k, 'unset')} → {new.get(k, 'unset')}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(parts)


def plan_stages(recorded: Mapping[str, Any] | None, wanted: Mapping[str, Mapping[str, Any]],
                present: Mapping[str, bool]) -> list[StageDecision]:
    """One decision per stage in :data:`STAGES` order.

    ``recorded``: the options each stage was made with (from the manifest;
    ``None`` for none); ``wanted``: this run's; ``present``: whether each
    stage's output exists. A stage that is redone forces the later ones.
    """
    recorded = recorded or {}
    decisions: list[StageDecision] = []
    redone: str | None = None
    for stage in STAGES:
        old = recorded.get(stage)
        if redone is not None:
            decision = StageDecision(stage, False, f"made again because the {redone} is new")
        elif not present.get(stage):
            decision = StageDecision(stage, False, "not made yet")
        elif not isinstance(old, Mapping):
            decision = StageDecision(stage, False, f"no record of the options that made it ({MANIFEST_NAME} "
                                     "missing: a demo folder from an older version)")
        elif dict(old) != dict(wanted[stage]):
            decision = StageDecision(stage, False, describe_changes(old, wanted[stage]))
        else:
            decision = StageDecision(stage, True, "same options as the run that made it")
        if not decision.reuse and redone is None:
            redone = stage
        decisions.append(decision)
    return decisions


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The demo folder's record (``{}`` when missing or unreadable: then nothing is reused)."""
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return {}
    return data


def write_manifest(folder: str | Path, stages: Mapping[str, Any], **extra: Any) -> Path:
    """Write the record atomically: ``stages`` (the options each finished stage was made with) and ``extra``."""
    from .atomic import write_json

    path = Path(folder) / MANIFEST_NAME
    write_json(path, {"format": MANIFEST_FORMAT, "stages": dict(stages), **extra})
    return path
