"""Racing over seeds (F-Race's idea on Welch's test): the finalists get seeds a round at a time, and one is dropped
as soon as it is significantly worse than the leader on validation, so a verdict costs fewer runs than a fixed N.

Testing after every round is sequential testing: the chance of dropping a finalist that is in truth as good as the
leader is above `alpha`. The final comparison (`final/comparison.md`) is computed afresh from all runs made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from optimlight.tools.compare import holm, spread, welch_p


def racing(values: Mapping[str, Sequence[float]], alpha: float) -> list[str]:
    """The configurations still in the race: those not significantly below the leader (the highest mean), by
    Welch's test Holm-adjusted over the leader-vs-each comparisons."""
    means = {name: spread(v).mean for name, v in values.items()}
    scored = {name: m for name, m in means.items() if m is not None}
    if not scored:
        return list(values)
    leader = max(scored, key=scored.__getitem__)
    others = [name for name in values if name != leader]
    adjusted = holm([welch_p(values[leader], values[name]) for name in others])
    out = {name for name, p in zip(others, adjusted) if p is not None and p < alpha and scored.get(name, -1.0) < scored[leader]}
    return [name for name in values if name not in out and (name in scored or name == leader)]


def next_round(
    values: Mapping[str, Sequence[float]], attempts: Mapping[str, int], alpha: float, min_seeds: int, max_seeds: int
) -> list[str]:
    """Who gets one more seed now (`attempts`: runs made, failed ones too): everyone up to `min_seeds`; then the
    configurations still racing below `max_seeds`, while two or more race (a lone leader has won: more seeds
    cannot change the verdict)."""
    short = [name for name in values if attempts[name] < min_seeds]
    if short:
        return short
    alive = racing(values, alpha)
    if len(alive) < 2:
        return []
    return [name for name in alive if attempts[name] < max_seeds]
