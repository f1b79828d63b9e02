"""The capture engine: specs, batched capture with padding removed, the on-disk store, streamed statistics."""

from workbench.capture.engine import capture, estimate_capture, streaming
from workbench.capture.spec import CaptureSpec
from workbench.capture.store import Capture

__all__ = ["Capture", "CaptureSpec", "capture", "estimate_capture", "streaming"]
