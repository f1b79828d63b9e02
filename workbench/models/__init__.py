"""Loading models and the :class:`WorkbenchModel` wrapper."""

from workbench.models.load import load
from workbench.models.model import WorkbenchModel

__all__ = ["WorkbenchModel", "load"]
