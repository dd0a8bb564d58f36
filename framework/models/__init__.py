"""Model clients: OpenAI-compatible HTTP servers, the embedded llama.cpp model, in-process vLLM."""
from .base import Completion, LLMRequest, ModelClient

__all__ = ["Completion", "LLMRequest", "ModelClient"]
