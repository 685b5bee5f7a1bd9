"""Tasks: benchmark datasets, final-answer extraction and checking, and what an LRM-written plan is.

Importing this package does no work (no file is read, math-verify is imported on first use).
"""

from __future__ import annotations

from .answers import (
    KINDS,
    NUMERIC_KINDS,
    check_answer,
    extract_answer,
    format_number,
    gold_answer,
    grade,
    instruction_for,
    last_boxed,
    normalize_kind,
    parse_number,
    prompt_for,
)
from .datasets import (
    DATASET_ALIASES,
    DatasetConfig,
    LoadReport,
    Problem,
    default_data_dir,
    iter_problems,
    load_problems,
    resolve_dataset_path,
)

__all__ = [
    "DATASET_ALIASES",
    "KINDS",
    "NUMERIC_KINDS",
    "DatasetConfig",
    "LoadReport",
    "Problem",
    "check_answer",
    "default_data_dir",
    "extract_answer",
    "format_number",
    "gold_answer",
    "grade",
    "instruction_for",
    "iter_problems",
    "last_boxed",
    "load_problems",
    "normalize_kind",
    "parse_number",
    "prompt_for",
    "resolve_dataset_path",
]
