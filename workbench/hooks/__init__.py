"""Canonical hook points, their resolution through the adapters, and hook attachment."""

from workbench.hooks.hooking import HookFn, attach
from workbench.hooks.points import POINTS, PointDoc, ResolvedPoint, resolve_points

__all__ = ["POINTS", "HookFn", "PointDoc", "ResolvedPoint", "attach", "resolve_points"]
