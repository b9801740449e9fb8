"""mediamux: one MCP server for media AI (muse.ai, Muzaic, Mixpeek, MuAPI)."""

__version__ = "0.1.0"
