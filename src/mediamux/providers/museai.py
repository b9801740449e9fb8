"""muse.ai client: video hosting, collections, subtitles, search, and the AI job APIs.

Contract: ``shared/providers/museai-api.txt`` and NOTES §1. Two hosts: the files host
(``MUSEAI_BASE_URL``, default ``https://muse.ai/api``) and the jobs host (``MUSEAI_JOBS_URL``,
default ``https://api.muse.ai``), each with its own transport so the ``Key`` header is only
ever sent to the origin it belongs to. Errors are ``{"error": "snake_code"}`` bodies.

The API's terse shapes (``[start, end, word]`` triples, ``s e x y w h q`` boxes) are turned into
models with readable field names here, tolerantly: unknown fields are kept or ignored, and the
documented malformed variants are accepted.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from mediamux.files import multipart_file_upload
from mediamux.providers._util import Tolerant, number, path_segment, read_each
from mediamux.providers.errors import InvalidRequest
from mediamux.providers.transport import BodyFactory, Retry, Transport

Visibility = Literal["private", "unlisted", "public"]
JobKind = Literal["speech", "align", "sounds", "colors", "faces", "objects", "text"]
JOB_KINDS: tuple[JobKind, ...] = ("speech", "align", "sounds", "colors", "faces", "objects", "text")
SearchScope = Literal["owned", "channel", "collection", "video"]
# muse.ai has no word for "being worked on": a job is "pending" from submission until "done".
STATUS_OVERRIDES = {"pending": "running"}

Progress = Callable[[int, int], Awaitable[None]]


class Video(Tolerant):
    svid: str
    fid: str | None = None
    title: str | None = None
    description: str | None = None
    filename: str | None = None
    url: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    visibility: str | None = None
    ingesting: bool | None = None
    tcreated: int | None = None
    views: int | None = None
    cut_svid: str | None = None
    cut_start: float | None = None
    cut_end: float | None = None


class CollectionVideo(Tolerant):
    svid: str
    fid: str | None = None
    title: str | None = None
    duration: float | None = None
    url: str | None = None


class Collection(Tolerant):
    scid: str | None = None
    name: str | None = None
    visibility: str | None = None
    tcreated: int | None = None
    videos: list[CollectionVideo] = Field(default_factory=list)


class SearchHit(BaseModel):
    svid: str
    times: list[float] = Field(description="Seconds into the video where the query matches")


class Segment(BaseModel):
    start: float
    end: float


class AlignedWord(BaseModel):
    start: float
    end: float
    word: str


class Box(BaseModel):
    x: float = Field(description="Left edge, fraction of the frame width")
    y: float = Field(description="Top edge, fraction of the frame height")
    width: float
    height: float
    confidence: float | None = None


class FaceBox(Box):
    face_id: str
    start: float | None = Field(None, description="Seconds")
    end: float | None = Field(None, description="Seconds")
    fid: str | None = Field(None, description="File the face was seen in (face database only)")


class FaceCluster(BaseModel):
    cluster_id: str
    label: str | None = None
    faces: list[FaceBox] = Field(default_factory=list)


class Transcript(BaseModel):
    text: str


class Sounds(BaseModel):
    speech: list[Segment] = Field(default_factory=list)
    music: list[Segment] = Field(default_factory=list)
    silence: list[Segment] = Field(default_factory=list)
    laughter: list[Segment] = Field(default_factory=list)
    applause: list[Segment] = Field(default_factory=list)
    other: dict[str, list[Segment]] = Field(
        default_factory=dict, description="Sound classes not listed above"
    )


class Colors(BaseModel):
    colors: dict[str, float] = Field(description="Share of the image per colour name, 0..1")


class Faces(BaseModel):
    clusters: list[FaceCluster]


class ObjectBoxes(BaseModel):
    objects: dict[str, list[Box]] = Field(description="Object label → where it appears")


class TextBoxes(BaseModel):
    text: dict[str, list[Box]] = Field(description="Recognised word → where it appears")


class FaceDatabase(BaseModel):
    detected: list[FaceCluster] = Field(default_factory=list)
    deleted: list[FaceBox] = Field(default_factory=list)
    ignored: list[FaceBox] = Field(default_factory=list)


class JobState(BaseModel):
    status: str
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


# -- shaping terse provider answers into readable models ---------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _box(raw: dict[str, Any]) -> Box:
    return Box(
        x=number(raw.get("x")) or 0.0,
        y=number(raw.get("y")) or 0.0,
        width=number(raw.get("w")) or 0.0,
        height=number(raw.get("h")) or 0.0,
        confidence=number(raw.get("q")),
    )


def _face(face_id: str, raw: dict[str, Any]) -> FaceBox:
    moment = _dict(raw.get("moment")) or raw
    box = _box(moment)
    return FaceBox(
        face_id=face_id,
        **box.model_dump(),
        start=number(moment.get("s")),
        end=number(moment.get("e")),
        fid=moment.get("f") if isinstance(moment.get("f"), str) else None,
    )


def _clusters(raw: Any) -> list[FaceCluster]:
    clusters = []
    for cluster_id, cluster in _dict(raw).items():
        if not isinstance(cluster, dict):
            continue
        faces = _dict(cluster.get("faces"))
        clusters.append(
            FaceCluster(
                cluster_id=str(cluster_id),
                label=cluster.get("label") or None,
                faces=[_face(str(fid), f) for fid, f in faces.items() if isinstance(f, dict)],
            )
        )
    return clusters


def _segments(raw: Any) -> list[Segment]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            start, end = number(item[0]), number(item[1])
            if start is not None and end is not None:
                out.append(Segment(start=start, end=end))
        elif isinstance(item, dict) and number(item.get("start")) is not None:
            start = number(item.get("start")) or 0.0
            out.append(Segment(start=start, end=number(item.get("end")) or start))
    return out


def _words(raw: Any) -> list[AlignedWord]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, (list, tuple)) and len(item) >= 3:
            start, end = number(item[0]), number(item[1])
            if start is not None and end is not None:
                out.append(AlignedWord(start=start, end=end, word=str(item[2])))
    return out


def _boxes_by_label(raw: Any) -> dict[str, list[Box]]:
    if not isinstance(raw, dict):
        return {}
    return {
        str(label): [_box(b) for b in boxes if isinstance(b, dict)]
        for label, boxes in raw.items()
        if isinstance(boxes, list)
    }


def shape_job_result(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A finished job's raw answer → the readable model for that kind, as JSON-ready data."""
    model: BaseModel
    if kind == "speech":
        model = Transcript(text=str(raw.get("transcript") or raw.get("text") or ""))
    elif kind == "align":
        return {"words": [w.model_dump() for w in _words(raw.get("words"))]}
    elif kind == "sounds":
        sounds = _dict(raw.get("sounds"))
        known = {k: _segments(sounds.get(k)) for k in ("speech", "music", "silence", "laughter", "applause")}
        other = {k: _segments(v) for k, v in sounds.items() if k not in known}
        model = Sounds(**known, other=other)
    elif kind == "colors":
        colors = _dict(raw.get("colors"))
        model = Colors(colors={str(k): v for k, v in colors.items() if isinstance(v, (int, float))})
    elif kind == "faces":
        model = Faces(clusters=_clusters(raw.get("faces")))
    elif kind == "objects":
        model = ObjectBoxes(objects=_boxes_by_label(raw.get("objects")))
    elif kind == "text":
        model = TextBoxes(text=_boxes_by_label(raw.get("text")))
    else:
        return dict(raw)
    return model.model_dump(mode="json")


def shape_face_db(raw: Any) -> FaceDatabase:
    raw = raw if isinstance(raw, dict) else {}

    def loose(section: Any) -> list[FaceBox]:
        if not isinstance(section, dict):
            return []
        return [_face(str(fid), f) for fid, f in section.items() if isinstance(f, dict)]

    return FaceDatabase(
        detected=_clusters(raw.get("detected")),
        deleted=loose(raw.get("deleted")),
        ignored=loose(raw.get("ignored")),
    )


def parse_search(raw: Any) -> list[SearchHit]:
    """``[[svid, [t1, t2, …]], …]`` — also tolerates ``{"svid": …, "times": …}`` objects."""
    hits = []
    for item in raw if isinstance(raw, list) else (raw.get("results", []) if isinstance(raw, dict) else []):
        if isinstance(item, (list, tuple)) and len(item) >= 1:
            times = item[1] if len(item) > 1 and isinstance(item[1], list) else []
            hits.append(
                SearchHit(svid=str(item[0]), times=[t for t in (number(x) for x in times) if t is not None])
            )
        elif isinstance(item, dict) and "svid" in item:
            times = item.get("times") or []
            hits.append(
                SearchHit(
                    svid=str(item["svid"]), times=[t for t in (number(x) for x in times) if t is not None]
                )
            )
    return hits


def _form(fields: dict[str, str]) -> BodyFactory:
    """A small text-only multipart body (cut, subtitle rename): the API takes form fields there."""

    def build() -> tuple[dict[str, str], Any]:
        boundary = "mediamux-" + secrets.token_hex(12)
        parts = []
        for name, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()

        async def stream() -> Any:
            yield body

        return {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(body)),
        }, stream()

    return build


def _seg(value: str, what: str, operation: str) -> str:
    return path_segment(value, what, title="muse.ai", provider="museai", operation=operation)


def _subtitle_path(svid: str, subtitle_id: str, operation: str) -> str:
    return f"files/subtitles/{_seg(svid, 'svid', operation)}/{_seg(subtitle_id, 'subtitle id', operation)}"


class MuseaiClient:
    provider = "museai"

    def __init__(self, files: Transport, jobs: Transport) -> None:
        self.files = files
        self.jobs = jobs

    @property
    def origin(self) -> str:
        """Where this provider serves from: its own output URLs are trusted for downloads."""
        return self.files.origin

    def scrub(self, text: str, limit: int = 300) -> str:
        """Provider text made safe to relay: no key in any form, cut to ``limit`` characters."""
        return self.files.scrub(text, limit)

    # -- keys ----------------------------------------------------------------------------------

    async def login(self, email: str, password: str) -> str:
        response = await self.files.request(
            "POST",
            "auth/login",
            operation="login",
            retry=Retry.NEVER,
            authenticated=False,
            json_body={"email": email, "passwd": password},
        )
        return self._key_of(self.files.parse_json(response, "login"), "login")

    async def create_key(self) -> str:
        response = await self.files.request(
            "POST", "auth/keys", operation="create_api_key", retry=Retry.IF_NOT_SENT
        )
        return self._key_of(self.files.parse_json(response, "create_api_key"), "create_api_key")

    def _key_of(self, data: Any, operation: str) -> str:
        key = data.get("key") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise self.files.malformed(operation, "no key in the answer")
        return key

    # -- videos --------------------------------------------------------------------------------

    async def upload_video(
        self,
        path: Path,
        allowed: Sequence[Path],
        *,
        visibility: str | None = None,
        collection: str | None = None,
        on_progress: Progress | None = None,
    ) -> Video:
        extra = {}
        # Unset optional fields are not sent: the provider's own default applies.
        if visibility:
            extra["visibility"] = visibility
        if collection:
            extra["collection"] = _seg(collection, "collection id", "upload_video")

        def body() -> tuple[dict[str, str], Any]:
            upload = multipart_file_upload(path, allowed, extra_fields=extra, on_progress=on_progress)
            return upload.headers, upload.stream

        response = await self.files.request(
            "POST",
            "files/upload",
            operation="upload_video",
            retry=Retry.IF_NOT_SENT,
            body=body,
        )
        return self._video(self.files.parse_json(response, "upload_video"), "upload_video")

    def _video(self, data: Any, operation: str) -> Video:
        try:
            return Video.model_validate(data)
        except ValidationError:
            raise self.files.malformed(operation, "no video object in the answer") from None

    async def list_videos(self) -> list[Video]:
        data = await self.files.get_json("files/videos", operation="list_videos")
        items = data if isinstance(data, list) else (data.get("videos", []) if isinstance(data, dict) else [])
        videos = [v for v in items if isinstance(v, dict) and v.get("svid")]
        return read_each(Video, videos, self.files, "list_videos", "video")

    async def get_video(self, svid: str) -> Video:
        data = await self.files.get_json(
            f"files/videos/{_seg(svid, 'svid', 'get_video')}", operation="get_video"
        )
        return self._video(data, "get_video")

    async def update_video(self, fid: str, changes: dict[str, Any]) -> Any:
        response = await self.files.request(
            "POST",
            f"files/set/{_seg(fid, 'fid', 'update_video')}",
            operation="update_video",
            retry=Retry.ALWAYS,
            json_body=changes,
        )
        return self.files.parse_json(response, "update_video") if response.content.strip() else {}

    async def delete_video(self, fid: str) -> None:
        await self.files.request(
            "DELETE",
            f"files/delete/{_seg(fid, 'fid', 'delete_video')}",
            operation="delete_video",
            retry=Retry.ALWAYS,
        )

    async def cut(self, svid: str, start: float, end: float) -> Video:
        response = await self.files.request(
            "POST",
            "files/cut",
            operation="cut_clip",
            retry=Retry.IF_NOT_SENT,
            body=_form({"svid": _seg(svid, "svid", "cut_clip"), "start": f"{start:g}", "end": f"{end:g}"}),
        )
        return self._video(self.files.parse_json(response, "cut_clip"), "cut_clip")

    async def set_cover_time(self, fid: str, seconds: float) -> None:
        await self.files.request(
            "POST",
            f"files/set/{_seg(fid, 'fid', 'set_cover')}/cover",
            operation="set_cover",
            retry=Retry.ALWAYS,
            params={"t": f"{seconds:g}"},
        )

    async def set_cover_image(self, fid: str, path: Path, allowed: Sequence[Path]) -> None:
        def body() -> tuple[dict[str, str], Any]:
            upload = multipart_file_upload(path, allowed, field="file")
            return upload.headers, upload.stream

        await self.files.request(
            "POST",
            f"files/set/{_seg(fid, 'fid', 'set_cover')}/cover",
            operation="set_cover",
            retry=Retry.IF_NOT_SENT,
            body=body,
        )

    # -- subtitles -----------------------------------------------------------------------------

    async def upload_subtitles(
        self, svid: str, path: Path, allowed: Sequence[Path], *, name: str | None = None
    ) -> dict[str, str]:
        filename = f"{name}.vtt" if name else None

        def body() -> tuple[dict[str, str], Any]:
            upload = multipart_file_upload(
                path, allowed, field="subtitles", filename=filename, content_type="text/vtt"
            )
            return upload.headers, upload.stream

        response = await self.files.request(
            "POST",
            f"files/subtitles/{_seg(svid, 'svid', 'upload_subtitles')}",
            operation="upload_subtitles",
            retry=Retry.IF_NOT_SENT,
            body=body,
        )
        data = self.files.parse_json(response, "upload_subtitles")
        if not isinstance(data, dict) or not data.get("id"):
            raise self.files.malformed("upload_subtitles", "no subtitle id in the answer")
        return {"id": str(data["id"]), "name": str(data.get("name") or name or "")}

    async def list_subtitles(self, svid: str) -> dict[str, str]:
        data = await self.files.get_json(
            f"files/subtitles/{_seg(svid, 'svid', 'list_subtitles')}", operation="list_subtitles"
        )
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
        if isinstance(data, list):  # tolerate a list of {id, name}
            return {str(i["id"]): str(i.get("name", "")) for i in data if isinstance(i, dict) and "id" in i}
        raise self.files.malformed("list_subtitles", "expected a map of subtitle ids to names")

    async def get_subtitles(self, svid: str, subtitle_id: str) -> str:
        response = await self.files.request(
            "GET",
            _subtitle_path(svid, subtitle_id, "get_subtitles"),
            operation="get_subtitles",
            retry=Retry.ALWAYS,
        )
        return response.text

    async def rename_subtitles(self, svid: str, subtitle_id: str, name: str) -> None:
        await self.files.request(
            "POST",
            _subtitle_path(svid, subtitle_id, "rename_subtitles") + "/set",
            operation="rename_subtitles",
            retry=Retry.ALWAYS,
            body=_form({"name": name}),
        )

    async def delete_subtitles(self, svid: str, subtitle_id: str) -> None:
        await self.files.request(
            "POST",
            _subtitle_path(svid, subtitle_id, "delete_subtitles") + "/delete",
            operation="delete_subtitles",
            retry=Retry.ALWAYS,
        )

    # -- collections ---------------------------------------------------------------------------

    async def list_collections(self) -> list[Collection]:
        data = await self.files.get_json("files/collections", operation="list_collections")
        items = (
            data
            if isinstance(data, list)
            else (data.get("collections", []) if isinstance(data, dict) else [])
        )
        collections = [c for c in items if isinstance(c, dict)]
        return read_each(Collection, collections, self.files, "list_collections", "collection")

    async def get_collection(self, scid: str) -> Collection:
        data = await self.files.get_json(
            f"files/collections/{_seg(scid, 'scid', 'get_collection')}", operation="get_collection"
        )
        try:
            return Collection.model_validate({"scid": scid, **data} if isinstance(data, dict) else data)
        except ValidationError:
            raise self.files.malformed("get_collection", "no collection in the answer") from None

    async def create_collection(self, name: str, visibility: str) -> str:
        response = await self.files.request(
            "POST",
            "files/collections",
            operation="create_collection",
            retry=Retry.IF_NOT_SENT,
            json_body={"name": name, "visibility": visibility},
        )
        data = self.files.parse_json(response, "create_collection")
        scid = data.get("scid") if isinstance(data, dict) else None
        if not isinstance(scid, str):
            raise self.files.malformed("create_collection", "no scid in the answer")
        return scid

    async def delete_collection(self, scid: str) -> None:
        await self.files.request(
            "DELETE",
            f"files/collections/{_seg(scid, 'scid', 'delete_collection')}",
            operation="delete_collection",
            retry=Retry.ALWAYS,
        )

    async def add_to_collection(self, scid: str, svid: str) -> None:
        await self.files.request(
            "POST",
            f"files/collections/{_seg(scid, 'scid', 'add_to_collection')}/add",
            operation="add_to_collection",
            retry=Retry.ALWAYS,
            json_body={"svid": _seg(svid, "svid", "add_to_collection")},
        )

    async def remove_from_collection(self, scid: str, svid: str) -> None:
        operation = "remove_from_collection"
        await self.files.request(
            "DELETE",
            f"files/collections/{_seg(scid, 'scid', operation)}/{_seg(svid, 'svid', operation)}",
            operation=operation,
            retry=Retry.ALWAYS,
        )

    # -- search --------------------------------------------------------------------------------

    async def search(
        self, query: str, scope: SearchScope = "owned", target_id: str | None = None
    ) -> list[SearchHit]:
        if scope == "owned":
            path, authenticated = "search", True
        else:
            if not target_id:
                raise InvalidRequest(
                    f"muse.ai search: scope {scope!r} needs target_id (the {scope} id)",
                    provider="museai",
                    operation="search",
                )
            # Channel, public collection and public video search are keyless in the API.
            path, authenticated = f"search/{scope}/{_seg(target_id, scope + ' id', 'search')}", False
        response = await self.files.request(
            "GET",
            path,
            operation="search",
            retry=Retry.ALWAYS,
            params={"q": query},
            authenticated=authenticated,
        )
        return parse_search(self.files.parse_json(response, "search"))

    # -- AI jobs -------------------------------------------------------------------------------

    async def submit_job(
        self,
        kind: JobKind,
        path: Path,
        allowed: Sequence[Path],
        *,
        phrase: str | None = None,
        on_progress: Progress | None = None,
    ) -> str:
        extra = {"phrase": phrase} if phrase is not None else None

        def body() -> tuple[dict[str, str], Any]:
            upload = multipart_file_upload(path, allowed, extra_fields=extra, on_progress=on_progress)
            return upload.headers, upload.stream

        response = await self.jobs.request("POST", kind, operation=kind, retry=Retry.IF_NOT_SENT, body=body)
        data = self.jobs.parse_json(response, kind)
        job_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not job_id:
            error = self.jobs.malformed(kind, "no job id in the answer")
            error.maybe_sent = True
            raise error
        return self.jobs.checked_id(job_id, "job id", kind)

    async def get_job(self, kind: JobKind, job_id: str) -> JobState:
        data = await self.jobs.get_json(f"{kind}/{_seg(job_id, 'job id', kind)}", operation=kind)
        if not isinstance(data, dict):
            raise self.jobs.malformed(kind, "expected an object with a status")
        status = str(data.get("status") or "unknown").lower()
        result = {k: v for k, v in data.items() if k not in ("status", "error")}
        error = data.get("error")
        return JobState(status=status, result=result, error=str(error) if error else None)

    async def faces_db(self) -> FaceDatabase:
        return shape_face_db(await self.jobs.get_json("faces/db", operation="list_faces"))

    async def modify_faces(self, changes: dict[str, dict[str, Any]]) -> Any:
        response = await self.jobs.request(
            "POST",
            "faces/modify",
            operation="update_faces",
            retry=Retry.IF_NOT_SENT,
            json_body=changes,
        )
        return self.jobs.parse_json(response, "update_faces") if response.content.strip() else {}
