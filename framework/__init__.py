"""synthloom: synthetic training data from YAML graphs of LLM roles, streamed record by record."""
from .api import RunResult, arun, load, load_dataset, read_manifest, read_records, run
from .card import build_card
from .context import RunContext
from .errors import ConfigError, ModelCallError, RecordError, RunAborted, SynthloomError
from .graph import Graph
from .hub import push
from .mixing import mixed_features
from .models.base import Completion, LLMRequest
from .node import ANY_KEY, Drop, Node, NodeParams, node
from .preview import apreview, preview
from .report import build_report
from .scheduler import Runner, RunOptions

__all__ = [
    "ANY_KEY", "Completion", "ConfigError", "Drop", "Graph", "LLMRequest", "ModelCallError", "Node",
    "NodeParams", "RecordError", "RunAborted", "RunContext", "RunOptions", "RunResult", "Runner",
    "SynthloomError", "apreview", "arun", "build_card", "build_report", "load", "load_dataset", "mixed_features",
    "node", "preview", "push", "read_manifest", "read_records", "run",
]
__version__ = "0.1.0"
