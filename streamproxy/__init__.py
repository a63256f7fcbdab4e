from streamproxy.core import ChatStream, Limits, ToolSchemas, assemble

__all__ = ["ChatStream", "Limits", "ToolSchemas", "assemble"]
