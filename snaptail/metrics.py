"""Optional Prometheus metrics: the public name of :mod:`snaptail.application.metrics`."""

from snaptail.application.metrics import SnaptailMetrics, active, disable, enable

__all__ = ["SnaptailMetrics", "active", "disable", "enable"]
