"""Chat-model backends behind `w4s.protocols.ChatModel`, one per file, built by `factory`.

Importing this package loads no model and imports neither torch nor transformers; each
backend imports its heavy libraries when it is built.
"""

from w4s.models.factory import build_chat_model, clear_model_cache
from w4s.models.scripted import ScriptedChatModel

__all__ = ["ScriptedChatModel", "build_chat_model", "clear_model_cache"]
