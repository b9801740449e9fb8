"""MCP prompts: multi-provider workflows a user can start from the host's prompt menu.

Each prompt is only registered when the toolsets it uses are enabled, so it never points an agent
at a tool the server does not offer.
"""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field, ValidationError

from mediamux.tools import arguments as argument_errors

Svid = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="muse.ai video id (svid)")]


def prompt_argument_error(exc: BaseException) -> str | None:
    """What is wrong with a prompt's arguments, when ``exc`` (the SDK wraps it twice) says so."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ValidationError):
        cause = cause.__cause__
    if cause is None:
        return None
    message, _named = argument_errors.describe(cause)
    return message


def register_prompts(server: MCPServer, toolsets: list[str]) -> None:
    enabled = set(toolsets)

    if {"museai", "muzaic"} <= enabled:

        @server.prompt(title="Soundtrack for a video", description="Compose music that fits a muse.ai video")
        def soundtrack_for_video(svid: Svid) -> str:
            return (
                f"Compose a soundtrack for the muse.ai video {svid}.\n"
                f"1. Call museai_get_video with svid {svid} and note its duration (seconds), title and description.\n"
                "2. Call muzaic_list_tags and pick two to four tags that suit the title and description; "
                "avoid pairs the catalog lists as conflicting.\n"
                "3. If the description names clear sections, or the user has the video's file locally (inside "
                "the allowed folders: museai_detect_sounds takes that local path, not an svid, and finds its "
                "speech, music and silence), use muzaic_create_soundtrack with one region per section; "
                "otherwise call muzaic_generate_music with duration equal to the video's length, rounded up "
                "to whole seconds.\n"
                "4. Generation costs 1 Muzaic token per second of audio: state the duration and the token cost "
                "before generating. If the result comes back 'running', call jobs_wait with its job_id.\n"
                "5. Report the saved audio file path, the hash (for regenerating) and the tokens used."
            )

    if "museai" in enabled or "mixpeek" in enabled:

        @server.prompt(
            title="Find moments", description="Search muse.ai and Mixpeek for moments and merge them"
        )
        def find_moments(query: Annotated[str, Field(min_length=1, max_length=300)]) -> str:
            steps = [f"Find the moments in the user's videos that match: {query!r}."]
            if "museai" in enabled:
                steps.append(
                    "- Call museai_search with the query. Add a modality prefix when the query names one "
                    "(s: speech, f: faces, t: on-screen text, o: objects, a: actions, z: sounds). Each hit is a "
                    "video id with the seconds where it matches."
                )
            if "mixpeek" in enabled:
                steps.append(
                    "- Call mixpeek_search with the query over the user's collection ids (ask for them if unknown), "
                    "search_type 'semantic' first and 'fulltext' for exact words. Each result is an asset with a "
                    "segment start and end time."
                )
            steps.append(
                "Merge the results into one list of (video, start second, source), sorted by video and time; "
                "merge moments of the same video less than 3 s apart, and keep which source found each. Show "
                "the list as a table. These searches are free."
            )
            return "\n".join(steps)

    if "museai" in enabled:

        @server.prompt(title="Subtitle a video", description="Make and attach subtitles for a muse.ai video")
        def subtitle_video(svid: Svid) -> str:
            return (
                f"Add subtitles to the muse.ai video {svid}.\n"
                f"1. Call museai_list_subtitles for {svid}; if a track already exists, show it and ask whether "
                "to add another.\n"
                f"2. Call museai_auto_subtitles with svid {svid}. It transcribes and aligns the audio (two paid "
                "muse.ai AI jobs) and uploads a WebVTT track. If it returns 'running', call it again with the "
                "same svid: it resumes the same jobs without paying twice.\n"
                "3. Show the first cues of the WebVTT text and the new subtitle id, and offer "
                "museai_rename_subtitles to name the track after its language."
            )
