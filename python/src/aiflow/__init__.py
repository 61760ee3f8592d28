"""AI Flow from Python: events, executions, metrics, the model registry and AI graphs.

>>> import aiflow
>>> client = aiflow.Client()   # AIFLOW_URL (default http://127.0.0.1:8080), AIFLOW_TOKEN

See :class:`aiflow.Client` and :mod:`aiflow.graph`.
"""

from .client import DEFAULT_URL, Client
from .errors import ApiError
from . import graph

__all__ = ["ApiError", "Client", "DEFAULT_URL", "graph"]
__version__ = "0.1.0"
