"""Ranges of config values as annotations (`Annotated[int, Ge(1)]`, annotated-types' bounds): what optimlight's own
signatures take, and what `optimlight.app.schema` checks every config value against."""

from __future__ import annotations

from typing import Annotated

import annotated_types as at

#: What seed_everything and numpy accept as a seed (Lightning replaces others by a random seed, with a warning).
Seed = Annotated[int, at.Interval(ge=0, le=2**32 - 1)]
PositiveInt = Annotated[int, at.Ge(1)]
NonNegativeInt = Annotated[int, at.Ge(0)]
Fraction = Annotated[float, at.Interval(ge=0, le=1)]
NonNegative = Annotated[float, at.Ge(0)]
