"""Tasks: benchmark datasets, final-answer extraction and checking, and what an LRM-written plan is.

Importing this package does no work (no file is read, math-verify is imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

_EXPORTS = {
    "DATASET_ALIASES": ".datasets",
    "DatasetConfig": ".datasets",
    "KINDS": ".answers",
    "LoadReport": ".datasets",
    "NUMERIC_KINDS": ".answers",
    "Problem": ".datasets",
    "check_answer": ".answers",
    "default_data_dir": ".datasets",
    "extract_answer": ".answers",
    "format_number": ".answers",
    "gold_answer": ".answers",
    "grade": ".answers",
    "instruction_for": ".answers",
    "iter_problems": ".datasets",
    "last_boxed": ".answers",
    "load_problems": ".datasets",
    "normalize_kind": ".answers",
    "parse_number": ".answers",
    "prompt_for": ".answers",
    "resolve_dataset_path": ".datasets",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DATASET_ALIASES",
    "DatasetConfig",
    "KINDS",
    "LoadReport",
    "NUMERIC_KINDS",
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

if TYPE_CHECKING:
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
