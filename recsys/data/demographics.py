"""User demographics as float32 feature matrices, fitted on training rows only (``Dataset.user_design`` uses
them; image metadata is encoded once by ``recsys.data.encodings``).

``TabularEncoder`` handles any table (``users.csv``, or any other table of attributes):

- numeric columns: standardised with the training mean and (population, ddof=0) standard deviation, plus a
  ``COLUMN:missing`` indicator; a missing value becomes 0 (the training mean) with the indicator set to 1;
- categorical columns: one-hot ``COLUMN=VALUE`` for values seen at least ``min_count`` times in training
  (at most ``max_categories`` of them, most frequent first), ``COLUMN=other`` for rarer or unseen values and
  ``COLUMN=unknown`` for missing ones. These two columns are always present, so new users and items never
  produce a NaN or a shape change.

``PamelaUserEncoder`` adds PAMELA's treatment: age standardised and binned by decade with PAMELA's words
(``twenties``, ``thirties``, ...; the given ``age_binned`` is used only when age is missing), gender with every
seen value kept, nationality with the frequent ones kept. ``user_feature_encoder_for`` picks it when PAMELA's
columns are there.

Missing means None, NaN, an empty string or one of ``MISSING_TOKENS`` (case-insensitive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: strings that mean "no value" in hand-made tables ("none" is not one: it is the style of a photograph)
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "unknown", "?"})

#: identifier and free-text columns that are never features
DEFAULT_EXCLUDE = ("user_id", "item_id", "image_id", "participant_id", "path", "image_path", "prompt")

#: PAMELA's age_binned words, by decade
DECADE_WORDS = {
    0: "under ten",
    1: "teens",
    2: "twenties",
    3: "thirties",
    4: "forties",
    5: "fifties",
    6: "sixties",
    7: "seventies",
    8: "eighties",
    9: "nineties",
}

PAMELA_USER_COLUMNS = ("age", "gender", "nationality")
OTHER, UNKNOWN = "other", "unknown"


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_TOKENS


def _category(value: Any) -> str | None:
    """A categorical value as a stripped string (None when missing); 3.0 and 3 are the same category."""
    if _is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _numbers(column: str, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values and a missing mask; a ValueError naming the column and row for a non-number."""
    out = np.zeros(len(values), dtype=np.float64)
    missing = np.zeros(len(values), dtype=bool)
    for row, value in enumerate(values.tolist()):
        if _is_missing(value):
            missing[row] = True
            continue
        if isinstance(value, bool):
            raise ValueError(f"column {column!r}: row {row} holds {value!r}, expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"column {column!r}: row {row} holds {value!r}, which is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"column {column!r}: row {row} holds {value!r}; values must be finite")
        out[row] = number
    return out, missing


@dataclass(kw_only=True, repr=False, eq=False)
class TabularEncoder:
    """One-hot and standardised features of a DataFrame's columns, fitted on training rows.

    Args:
        min_count: a categorical value needs this many training rows to get its own column (>= 1).
        max_categories: at most this many value columns per categorical column (>= 1), most frequent first.
        numeric: columns to treat as numbers (default: those with a numeric, non-bool dtype).
        categorical: columns to treat as categories (default: every other column).
        exclude: columns never used (ids, paths, free text).

    After ``fit``: ``feature_names`` (list of str, one per output column) and ``columns_`` (the input columns
    used). ``transform`` returns float32 (n_rows, len(feature_names)) with no NaN.
    """

    min_count: int = 5
    max_categories: int = 50
    numeric: tuple[str, ...] | list[str] | None = None
    categorical: tuple[str, ...] | list[str] | None = None
    exclude: tuple[str, ...] | list[str] = DEFAULT_EXCLUDE

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_count={self.min_count}, max_categories={self.max_categories})"

    # ----------------------------------------------------------------- hooks for dataset-aware subclasses
    def _prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        """Derived or renamed columns before encoding (identity here)."""
        return df

    def _min_count_for(self, column: str) -> int:
        return self.min_count

    # ----------------------------------------------------------------- fitting
    def _check_params(self) -> None:
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {self.min_count!r}")
        if not isinstance(self.max_categories, int) or self.max_categories < 1:
            raise ValueError(f"max_categories must be an integer >= 1, got {self.max_categories!r}")
        overlap = set(self.numeric or ()) & set(self.categorical or ())
        if overlap:
            raise ValueError(f"columns {sorted(overlap)} are listed as both numeric and categorical")

    def _kinds(self, df: pd.DataFrame) -> dict[str, str]:
        named = list(self.numeric or ()) + list(self.categorical or ())
        absent = [c for c in named if c not in df.columns]
        if absent:
            raise ValueError(
                f"columns {absent} were named but are not in the table (it has {list(df.columns)})"
            )
        kinds = {}
        for column in df.columns:
            if column in self.exclude:
                continue
            if column in (self.numeric or ()):
                kinds[column] = "numeric"
            elif column in (self.categorical or ()):
                kinds[column] = "categorical"
            else:  # not named: numeric dtypes are numbers, everything else (strings, bools) a category
                dtype = df[column].dtype
                is_number = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
                kinds[column] = "numeric" if is_number else "categorical"
        return kinds

    def fit(self, df: pd.DataFrame) -> TabularEncoder:
        """Learn means, scales and category lists from training rows ``df``; returns self."""
        self._check_params()
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise ValueError("cannot fit feature encoders on an empty table")
        df = self._prepare(df)
        self.columns_: list[str] = []
        self.stats_: dict[str, dict] = {}
        self.feature_names: list[str] = []
        for column, kind in self._kinds(df).items():
            if kind == "numeric":
                values, missing = _numbers(column, df[column])
                present = values[~missing]
                mean = float(present.mean()) if len(present) else 0.0
                std = float(present.std()) if len(present) else 0.0
                # a constant column carries no information; scale 1 keeps it at 0 instead of dividing by 0
                self.stats_[column] = {"kind": kind, "mean": mean, "scale": std if std > 0 else 1.0}
                self.feature_names += [column, f"{column}:missing"]
            else:
                counts = pd.Series([_category(v) for v in df[column].tolist()], dtype=object).value_counts()
                counts = counts.drop([OTHER, UNKNOWN], errors="ignore")
                frequent = [(v, n) for v, n in counts.items() if n >= self._min_count_for(column)]
                # most frequent first, ties by name, so the columns do not depend on row order
                frequent.sort(key=lambda item: (-item[1], item[0]))
                kept = [v for v, _ in frequent[: self.max_categories]]
                self.stats_[column] = {"kind": kind, "categories": kept}
                self.feature_names += [f"{column}={v}" for v in kept] + [
                    f"{column}={OTHER}",
                    f"{column}={UNKNOWN}",
                ]
            self.columns_.append(column)
        if not self.columns_:
            raise ValueError(f"no feature columns in the table (columns {list(df.columns)} are all excluded)")
        return self

    # ----------------------------------------------------------------- applying
    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Features of ``df``'s rows: float32 (len(df), len(feature_names)), no NaN; unseen values -> other."""
        if not hasattr(self, "stats_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(train_df) first")
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
        df = self._prepare(df)
        absent = [c for c in self.columns_ if c not in df.columns]
        if absent:
            raise ValueError(f"table lacks column(s) {absent} that the encoder was fitted on")
        blocks = []
        for column in self.columns_:
            stats = self.stats_[column]
            if stats["kind"] == "numeric":
                values, missing = _numbers(column, df[column])
                standardised = np.where(missing, 0.0, (values - stats["mean"]) / stats["scale"])
                blocks.append(np.stack([standardised, missing.astype(np.float64)], axis=1))
            else:
                position = {v: i for i, v in enumerate(stats["categories"])}
                other, unknown = len(position), len(position) + 1
                block = np.zeros((len(df), len(position) + 2))
                for row, value in enumerate(df[column].tolist()):
                    category = _category(value)
                    block[row, unknown if category is None else position.get(category, other)] = 1.0
                blocks.append(block)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.fit(df).transform(df)


def age_bin(age: float) -> str:
    """PAMELA's word for the decade of an age in years: 28 -> ``twenties``; ValueError outside 0-120."""
    if not 0 <= age <= 120:
        raise ValueError(f"age {age!r} is outside 0-120 years")
    return DECADE_WORDS.get(int(age // 10), "hundreds")


class PamelaUserEncoder(TabularEncoder):
    """PAMELA users: age (standardised and binned by decade), gender, nationality (frequent kept, rest other).

    ``min_count`` applies to nationality; every gender and age bin seen in training keeps its own column.
    """

    def _prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=df.index)
        ages, missing = _numbers("age", df["age"]) if "age" in df.columns else (None, None)
        given_bins = df["age_binned"].tolist() if "age_binned" in df.columns else [None] * len(df)
        if ages is not None:
            out["age"] = np.where(missing, np.nan, ages)
            # the bin is derived from age so it is consistent; the given bin fills in where age is missing
            out["age_bin"] = [
                _category(b) if gone else age_bin(a)
                for a, gone, b in zip(ages, missing, given_bins, strict=True)
            ]
        else:
            out["age_bin"] = [_category(b) for b in given_bins]
        for column in df.columns:
            if column not in ("age", "age_binned") and column not in self.exclude:
                out[column] = df[column]
        return out

    def _kinds(self, df: pd.DataFrame) -> dict[str, str]:
        kinds = super()._kinds(df)
        for column in ("gender", "nationality", "age_bin"):
            if column in kinds:
                kinds[column] = "categorical"
        return kinds

    def _min_count_for(self, column: str) -> int:
        return 1 if column in ("gender", "age_bin") else self.min_count


def user_feature_encoder_for(df: pd.DataFrame, **params: Any) -> TabularEncoder:
    """An unfitted encoder for a users table: PAMELA's treatment when it has age, gender and nationality."""
    if all(c in df.columns for c in PAMELA_USER_COLUMNS):
        return PamelaUserEncoder(**params)
    return TabularEncoder(**params)
