"""Probe batteries: a TOML spec of models x prompt sets x probes, run resumably into tidy Parquet tables,
an offline HTML report and a markdown summary (``workbench battery run SPEC``)."""

from workbench.battery.report import compare_runs, write_report
from workbench.battery.runner import run_battery
from workbench.battery.spec import BatterySpec, SpecError, load_spec

__all__ = ["BatterySpec", "SpecError", "compare_runs", "load_spec", "run_battery", "write_report"]
