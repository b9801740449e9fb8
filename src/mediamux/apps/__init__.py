"""MCP Apps (``io.modelcontextprotocol/ui``, SEP-1865): HTML views a host renders beside tool results.

:mod:`~mediamux.apps.viewer` is the job viewer; its HTML is the package data file ``viewer.html``.
"""
