"""Benchmark data modules."""

from src.data.vtab import VTAB_GROUPS, VTAB_TASKS, VTABDataModule

__all__ = ["VTABDataModule", "VTAB_TASKS", "VTAB_GROUPS"]
