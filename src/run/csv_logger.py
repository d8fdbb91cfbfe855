"""Loggers whose files survive a resume.

Lightning's CSVLogger deletes ``metrics.csv`` when its folder already holds one, so a resumed
run kept only the epochs after the resume. :class:`ResumableCSVLogger` keeps the earlier
launches' rows and appends; rows of the steps the resume trains again (those after the
checkpoint a crash or a signal left) are replaced by the new ones, so the file ends as an
uninterrupted run's.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class ResumableCSVLogger(CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class AppendingExperimentWriter(ExperimentWriter):
    """Appends to an existing ``metrics.csv``, first dropping rows of epochs logged again."""

    def _check_log_dir_exists(self) -> None:
        # Lightning's version deletes metrics.csv here; read it instead (see save()).
        self._earlier: list[dict] | None = None
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                reader = csv.DictReader(f)
                self._earlier = list(reader)
                self.metrics_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self._earlier is not None and self.metrics:
            # By step: a run resumed part-way through an epoch keeps that epoch's earlier rows.
            steps = [float(m["step"]) for m in self.metrics if m.get("step") is not None]
            if steps:
                first = min(steps)
                kept = [r for r in self._earlier if not r.get("step") or float(r["step"]) < first]
                if len(kept) < len(self._earlier):
                    self._replace_file(kept)
            self._earlier = None
        super().save()

    def _replace_file(self, rows: list[dict]) -> None:
        partial = self.metrics_file_path + ".partial"
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, self.metrics_file_path)
