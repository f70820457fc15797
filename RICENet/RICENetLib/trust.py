"""How much a verdict deserves: the bundle's own validation figures, a calibrated probability, a conformal set.

"Recurrence — 5 of 5 folds, mean p = 0.80" reads the same from a model whose
cross-validation AUC is 0.95 and from one whose AUC is 0.38. Every output
(prediction.json, the HTML report, ``ricenet predict``'s summary, the Slicer
panel) therefore carries, from this one module:

- ``model_validation``: macro F1 and AUC over the bundle's folds (mean ± sd,
  number of folds) and the number of validation patients, and whether the
  model separates the classes at all (:data:`MIN_SEPARATING_AUC`);
- ``calibrated_probability``: the mean probability after the bundle's
  temperature scaling (:mod:`RICENetLib.calibration`);
- ``prediction_set``: the classes compatible with the case at 90 % coverage
  (:mod:`RICENetLib.conformal`), or why no set is available.

The verdict line puts a warning first when the model cannot separate the
classes, and says "Uncertain" when the set holds both classes.

>>> data = {"label": "recurrence", "agreement": "5/5", "probabilities": {"recurrence": 0.8, "rice": 0.2},
...         "model_validation": {"auc": {"mean": 0.38, "sd": 0.1, "n": 5}, "separates_classes": False}}
>>> qualify_verdict("Recurrence — 5 of 5 folds, mean p = 0.80", data)
'Model cannot separate the classes (cross-validation AUC 0.38) — Recurrence — 5 of 5 folds, mean p = 0.80'
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from .conformal import DEFAULT_COVERAGE

#: Below this cross-validation AUC the verdict starts with "Model cannot separate the classes". AUC 0.5 is
#: chance; 0.7 is the conventional lower bound of "acceptable" discrimination (Hosmer, Lemeshow & Sturdivant,
#: Applied Logistic Regression, 3rd ed. 2013, §5.2.4: 0.7–0.8 acceptable, 0.8–0.9 excellent). With 16 validation
#: patients per fold, as in the paper, a fold's AUC has a standard error near 0.1, so a mean under 0.7 is not
#: distinguishable from a model that barely beats a coin; the vote's probability then says little about the case.
MIN_SEPARATING_AUC = 0.7


def model_validation(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's cross-validation figures (from its folds' metrics), and whether they show separation."""
    from .bundle import mean_sd

    folds = list(metadata.get("folds") or [])
    out: dict[str, Any] = {
        "macro_f1": mean_sd([(f.get("metrics") or {}).get("macro_f1") for f in folds]),
        "auc": mean_sd([(f.get("metrics") or {}).get("auc") for f in folds]),
        "n_folds": len(folds),
        "n_validation_patients": sum(len(f.get("validation_patients") or []) for f in folds),
        "min_separating_auc": MIN_SEPARATING_AUC,
    }
    auc = out["auc"]["mean"]
    # None: no fold had both classes, so nothing shows separation either.
    out["separates_classes"] = bool(auc is not None and auc >= MIN_SEPARATING_AUC)
    return out


def assess(metadata: Mapping[str, Any], probabilities: Mapping[str, float],
           coverage: float = DEFAULT_COVERAGE) -> dict[str, Any]:
    """``model_validation``, ``calibrated_probability``, ``calibration`` and ``prediction_set`` for one case.

    ``metadata`` is a loaded bundle's ``bundle.json``; ``probabilities`` the
    ensemble's mean probability per class.
    """
    from .calibration import apply_temperature, out_of_fold_arrays
    from .conformal import METHOD, class_conditional_thresholds, check_coverage, patients_needed

    coverage = check_coverage(coverage)
    classes = list(metadata["class_names"])
    out: dict[str, Any] = {"model_validation": model_validation(metadata)}
    calibration = metadata.get("calibration")
    raw = [[float(probabilities[c]) for c in classes]]
    from .calibration import MIN_CALIBRATION_PATIENTS

    if calibration and calibration["n_patients"] < MIN_CALIBRATION_PATIENTS:
        out["calibrated_probability"] = None
        out["calibration"] = {"applied": False, "n_patients": calibration["n_patients"],
                              "temperature": float(calibration["temperature"]),
                              "reason": f"the temperature was fitted on {calibration['n_patients']} out-of-fold "
                                        f"patients; at least {MIN_CALIBRATION_PATIENTS} are needed to apply it"}
        temperature = None
    elif calibration:
        temperature = float(calibration["temperature"])
        calibrated = apply_temperature(raw, temperature)[0]
        out["calibrated_probability"] = {c: float(calibrated[k]) for k, c in enumerate(classes)}
        out["calibration"] = {"applied": True, **{k: calibration[k] for k in (
            "method", "temperature", "n_patients", "ece_before", "ece_after", "brier_before", "brier_after")}}
    else:
        temperature = None
        out["calibrated_probability"] = None
        out["calibration"] = None
    oof = metadata.get("out_of_fold")
    if not oof:
        out["prediction_set"] = {"coverage": coverage, "method": METHOD, "available": False, "classes": None,
                                 "needed_per_class": patients_needed(coverage),
                                 "reason": "the bundle holds no out-of-fold probabilities (trained by an earlier "
                                           "RICE-NET); retrain it to get calibration and prediction sets"}
        return out
    p, y = out_of_fold_arrays(oof, classes)
    case = raw
    if temperature is not None:
        p, case = apply_temperature(p, temperature), apply_temperature(raw, temperature)
    thresholds = class_conditional_thresholds(p, y, classes, coverage)
    out["prediction_set"] = thresholds.prediction_set({c: float(case[0][k]) for k, c in enumerate(classes)})
    return out


def _auc_text(validation: Mapping[str, Any]) -> str:
    auc = (validation.get("auc") or {}).get("mean")
    return "cross-validation AUC not available" if auc is None else f"cross-validation AUC {auc:.2f}"


def _set_text(prediction_set: Mapping[str, Any], label: str) -> tuple[str, str]:
    """(prefix, suffix) of the verdict for the conformal set."""
    share = f"{100 * float(prediction_set.get('coverage', DEFAULT_COVERAGE)):g} %"
    if not prediction_set.get("available"):
        counts = prediction_set.get("n_calibration_per_class")
        if not counts:
            return "", f" ({share} set not available)"
        have = ", ".join(f"{c} {n}" for c, n in counts.items())
        return "", (f" ({share} set not available: needs {prediction_set['needed_per_class']} validation patients "
                    f"per class, has {have})")
    classes: Sequence[str] = prediction_set.get("classes") or []
    if len(classes) > 1:
        return f"Uncertain: the {share} set holds {'both' if len(classes) == 2 else 'all'} classes — ", ""
    if not classes:
        return "", f" ({share} set empty: unlike the validation patients of either class)"
    return "", f" ({share} set: {classes[0]} only)"


def qualify_verdict(base: str, prediction: Mapping[str, Any]) -> str:
    """``base`` (label, votes, mean p) with the warning first, then the calibrated p and the set."""
    validation = prediction.get("model_validation")
    prefix, suffix = "", ""
    if validation and not validation.get("separates_classes", True):
        if (validation.get("auc") or {}).get("mean") is None:  # untrained, or no fold validated both classes
            prefix = "Model not validated (no cross-validation AUC) — "
        else:
            prefix = f"Model cannot separate the classes ({_auc_text(validation)}) — "
    calibrated = prediction.get("calibrated_probability")
    if calibrated:
        suffix += f", calibrated p = {float(calibrated[prediction['label']]):.2f}"
    if prediction.get("prediction_set"):
        set_prefix, set_suffix = _set_text(prediction["prediction_set"], prediction["label"])
        prefix += set_prefix
        suffix += set_suffix
    return f"{prefix}{base}{suffix}"


def _mean_sd(summary: Mapping[str, Any] | None) -> str:
    from .metrics import format_mean_sd

    return format_mean_sd(dict(summary or {}))


def validation_figures(validation: Mapping[str, Any]) -> str:
    """``macro F1 0.52 ± 0.10, AUC 0.38 ± 0.10``: a bundle's cross-validation figures (mean ± sd over folds)."""
    return f"macro F1 {_mean_sd(validation['macro_f1'])}, AUC {_mean_sd(validation['auc'])}"


def validation_line(prediction: Mapping[str, Any]) -> str:
    """One line for the CLI and the panel: the model's figures, the calibration and the set."""
    validation = prediction.get("model_validation")
    if not validation:
        return ""
    parts = [f"model validation ({validation['n_folds']} folds, {validation['n_validation_patients']} validation "
             f"patients): {validation_figures(validation)}"]
    if not validation.get("separates_classes", True):
        parts.append(f"AUC under {validation['min_separating_auc']}: the model cannot separate the classes")
    calibration = prediction.get("calibration")
    if calibration and not calibration.get("applied", True):
        parts.append(f"no calibration: {calibration['reason']}")
    elif calibration:
        parts.append(f"temperature {calibration['temperature']:.2f} (out-of-fold ECE {calibration['ece_before']:.3f} "
                     f"→ {calibration['ece_after']:.3f})")
    prediction_set = prediction.get("prediction_set") or {}
    if prediction_set and not prediction_set.get("available"):
        parts.append(f"no prediction set: {prediction_set.get('reason', '')}")
    return "; ".join(parts)


def separation_warning_html(prediction: Mapping[str, Any]) -> str:
    """The warning the report puts at its top when the bundle's validation shows no separation ("" otherwise)."""
    validation = prediction.get("model_validation")
    if not validation or validation.get("separates_classes", True):
        return ""
    if (validation.get("auc") or {}).get("mean") is None:
        return ("<p class=warning id=separation><b>The model is not validated</b> (no cross-validation AUC): its "
                "probability says nothing about this case.</p>")
    return (f"<p class=warning id=separation><b>The model cannot separate the classes</b> "
            f"({html.escape(_auc_text(validation))}, under {validation['min_separating_auc']}): its probability says "
            "little about this case.</p>")


def trust_html(prediction: Mapping[str, Any]) -> str:
    """The report's "How far to trust this" section (empty for a prediction without these fields)."""
    validation = prediction.get("model_validation")
    if not validation:
        return ""
    esc = html.escape
    rows = [("Cross-validation macro F1 (mean ± sd over folds)", _mean_sd(validation["macro_f1"])),
            ("Cross-validation AUC (mean ± sd over folds)", _mean_sd(validation["auc"])),
            ("Folds / validation patients", f"{validation['n_folds']} / {validation['n_validation_patients']}")]
    calibrated = prediction.get("calibrated_probability")
    calibration = prediction.get("calibration")
    if calibrated and calibration:
        rows.append(("Calibrated probability", ", ".join(f"{c} {v:.3f}" for c, v in calibrated.items())))
        rows.append(("Temperature (out-of-fold patients)", f"{calibration['temperature']:.3f} ({calibration['n_patients']})"))
        rows.append(("ECE, 10 equal-width bins: raw → calibrated", f"{calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}"))
        rows.append(("Brier score: raw → calibrated", f"{calibration['brier_before']:.3f} → {calibration['brier_after']:.3f}"))
    elif calibration:
        rows.append(("Calibrated probability", f"not applied: {calibration.get('reason', '')}"))
    else:
        rows.append(("Calibrated probability", "not available (the bundle has no calibration)"))
    prediction_set = prediction.get("prediction_set") or {}
    if prediction_set:
        share = f"{100 * float(prediction_set['coverage']):g} %"
        value = (", ".join(prediction_set["classes"]) or "empty") if prediction_set.get("available") \
            else f"not available: {prediction_set.get('reason', '')}"
        rows.append((f"{share} conformal prediction set", value))
    body = "".join(f"<tr><td style='text-align:left'>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return (f"<h2>How far to trust this</h2><table id=trust>{body}</table>"
            "<p class=note>Figures from the bundle's own cross-validation. The calibration and the set are fitted on "
            "out-of-fold predictions of single-fold models and applied to the ensemble mean (an approximation); a set "
            "holding both classes means the data cannot tell them apart at that coverage.</p>")


def table_rows(prediction: Mapping[str, Any], classes: Sequence[str]) -> list[tuple[str, list[float], str]]:
    """Rows for the Slicer results table after ``agreement``: calibrated p, cross-validation figures, the set.

    Each row is ``(name, one value per class, label text)``; NaN where a class column has no value.
    """
    nan = float("nan")
    rows: list[tuple[str, list[float], str]] = []
    calibrated = prediction.get("calibrated_probability")
    calibration = prediction.get("calibration") or {}
    if calibrated:
        rows.append(("calibrated", [float(calibrated.get(c, nan)) for c in classes],
                     f"temperature {float(calibration.get('temperature', nan)):.2f}"))
    validation = prediction.get("model_validation")
    if validation:
        text = f"AUC {_mean_sd(validation['auc'])}, macro F1 {_mean_sd(validation['macro_f1'])}, " \
               f"{validation['n_validation_patients']} patients"
        if (validation.get("auc") or {}).get("mean") is None:
            text = "not validated: " + text
        elif not validation.get("separates_classes", True):
            text = "cannot separate the classes: " + text
        rows.append(("cross-validation", [nan for _ in classes], text))
    prediction_set = prediction.get("prediction_set")
    if prediction_set:
        share = f"{100 * float(prediction_set['coverage']):g} % set"
        if prediction_set.get("available"):
            members = list(prediction_set.get("classes") or [])
            rows.append((share, [1.0 if c in members else 0.0 for c in classes], ", ".join(members) or "empty"))
        else:
            rows.append((share, [nan for _ in classes], "not available"))
    return rows
