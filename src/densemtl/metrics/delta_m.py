"""Δm: the mean relative change of a multi-task model against single-task baselines (SPEC §6).

Δm = (1/T) Σ_t s_t (M_t − B_t) / B_t × 100, s_t = +1 where higher is better and −1 where lower is
better. ATRC reports this as a *gain* (positive = better), ASTMT as a *drop* (= −gain); the
functions here return the gain, and ``delta_m_report`` gives both, labelled.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["delta_m", "delta_m_report"]


def delta_m(
    results: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δm as a gain in percent over the metrics named in ``higher_is_better`` (positive = better).

    Every key of ``higher_is_better`` must be in ``results`` and ``baselines`` (extra keys there are
    ignored, so whole metric dicts can be passed); a zero baseline is an error, not an infinity.
    """
    if not higher_is_better:
        raise ValueError("delta_m needs at least one metric in higher_is_better")
    missing = {
        where: [k for k in higher_is_better if k not in values]
        for where, values in (("results", results), ("baselines", baselines))
    }
    if any(missing.values()):
        raise KeyError(
            "delta_m: missing metrics — "
            + "; ".join(f"{where} lacks {keys}" for where, keys in missing.items() if keys)
            + f" (needed: {sorted(higher_is_better)})"
        )
    total = 0.0
    for key, higher in higher_is_better.items():
        base = float(baselines[key])
        if base == 0:
            raise ValueError(f"delta_m: baseline of {key!r} is 0; a relative change is undefined")
        sign = 1.0 if higher else -1.0
        total += sign * (float(results[key]) - base) / base
    return 100.0 * total / len(higher_is_better)


def delta_m_report(
    results: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> dict[str, float]:
    """``{"delta_m_gain": g, "delta_m_drop": -g}`` so a report can quote either convention."""
    gain = delta_m(results, baselines, higher_is_better)
    return {"delta_m_gain": gain, "delta_m_drop": -gain}
