"""The data plane: the hot path from a client request to an upstream and back.

No framework lives here. ``app`` dispatches HTTP requests, ``api`` parses the
OpenAI surface into a ``RequestContext``, and ``pipeline`` runs the stages.
"""
