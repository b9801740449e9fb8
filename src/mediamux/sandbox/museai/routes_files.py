"""The muse.ai main host: the ``/api`` routes (also served by the jobs host) and the CDN paths of video objects."""

from __future__ import annotations

import hashlib
import hmac
import math
import mimetypes
import re
import shutil
from typing import Any

import anyio
import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mediamux.sandbox.common import base_name, public_origin
from mediamux.sandbox.media import PNG_SIGNATURE, color_for, png_bytes
from mediamux.sandbox.museai.analysis import cut_wav, probe_media, sounds_map
from mediamux.sandbox.museai.core import MuseaiCore
from mediamux.sandbox.museai.search import match_times, parse_query
from mediamux.sandbox.museai.state import INDEX_KINDS, VISIBILITIES, Collection, Subtitle, Video, new_id
from mediamux.sandbox.museai.web import ApiError, authed, form_text, json_object, success
from mediamux.sandbox.store import FILE_MODE, make_private_dirs

THUMB_SIZE = (160, 90)
_THUMB_FRAME = re.compile(r"(\d{5})\.jpg")


class FilesHost(MuseaiCore):
    def _api_routes(self) -> list[BaseRoute]:
        return [
            Route("/api/auth/login", self._login, methods=["POST"]),
            Route("/api/auth/keys", self._create_key, methods=["POST"]),
            Route("/api/files/upload", self._upload, methods=["POST"]),
            Route("/api/files/cut", self._cut, methods=["POST"]),
            Route("/api/files/set/{fid}/cover", self._set_cover, methods=["POST"]),
            Route("/api/files/set/{fid}", self._set_video, methods=["POST"]),
            Route("/api/files/delete/{fid}", self._delete_video, methods=["DELETE"]),
            Route("/api/files/videos", self._list_videos, methods=["GET"]),
            Route("/api/files/videos/{svid}", self._get_video, methods=["GET"]),
            Route("/api/files/info/{svid}", self._info, methods=["GET"]),
            Route("/api/files/i/{kind}/{svid}", self._index, methods=["GET"]),
            Route("/api/files/subtitles/{svid}", self._upload_subtitles, methods=["POST"]),
            Route("/api/files/subtitles/{svid}", self._list_subtitles, methods=["GET"]),
            Route("/api/files/subtitles/{svid}/{subid}", self._get_subtitles, methods=["GET"]),
            Route("/api/files/subtitles/{svid}/{subid}/set", self._rename_subtitles, methods=["POST"]),
            Route("/api/files/subtitles/{svid}/{subid}/delete", self._delete_subtitles, methods=["POST"]),
            Route("/api/files/collections", self._list_collections, methods=["GET"]),
            Route("/api/files/collections", self._create_collection, methods=["POST"]),
            Route("/api/files/collections/{scid}", self._get_collection, methods=["GET"]),
            Route("/api/files/collections/{scid}", self._delete_collection, methods=["DELETE"]),
            Route("/api/files/collections/{scid}/add", self._collection_add, methods=["POST"]),
            Route("/api/files/collections/{scid}/{svid}", self._collection_remove, methods=["DELETE"]),
            Route("/api/search", self._search_owned, methods=["GET"]),
            Route("/api/search/channel/{channel}", self._search_channel, methods=["GET"]),
            Route("/api/search/collection/{scid}", self._search_collection, methods=["GET"]),
            Route("/api/search/video/{svid}", self._search_video, methods=["GET"]),
        ]

    def _cdn_routes(self) -> list[BaseRoute]:
        return [
            Route("/w/{fid}/data", self._serve_data, methods=["GET"]),
            Route("/w/{fid}/thumbnails/{name}", self._serve_thumbnail, methods=["GET"]),
        ]

    # -- shapes ------------------------------------------------------------------------------------------

    def _video_url(self, origin: str, video: Video) -> str:
        return f"{origin}/w/{video.fid}/data"

    def _upload_shape(self, origin: str, video: Video) -> dict[str, Any]:
        return {
            "fid": video.fid,
            "svid": video.svid,
            "filename": video.filename,
            "title": video.title,
            "description": video.description,
            "url": self._video_url(origin, video),
            "duration": video.duration,
            "width": video.width,
            "height": video.height,
            "size": video.size,
            "tcreated": video.tcreated,
            "visibility": video.visibility,
            "ingesting": self._ingesting(video),
        }

    def _full_shape(self, origin: str, video: Video, *, own: bool) -> dict[str, Any]:
        return {
            **self._upload_shape(origin, video),
            "mature": False,
            "own": own,
            "views": video.views,
            "twatched": 0,
        }

    def _collection_entry(self, origin: str, video: Video, tadded: int) -> dict[str, Any]:
        return {
            "svid": video.svid,
            "description": video.description,
            "duration": video.duration,
            "fid": video.fid,
            "filename": video.filename,
            "ingesting": self._ingesting(video),
            "size": video.size,
            "tadded": tadded,
            "tcreated": video.tcreated,
            "title": video.title,
            "url": self._video_url(origin, video),
            "views": video.views,
            "visibility": video.visibility,
            "width": video.width,
            "height": video.height,
        }

    # -- auth routes -------------------------------------------------------------------------------------

    async def _login(self, request: Request) -> Response:
        body = await json_object(request)
        email, passwd = body.get("email"), body.get("passwd")
        if not isinstance(email, str) or not email:
            raise ApiError(400, "email_not_provided")
        if not isinstance(passwd, str) or not passwd:
            raise ApiError(400, "passwd_not_provided")
        if email.strip().lower() != self.login_email.lower() or not hmac.compare_digest(
            passwd, self.login_password
        ):
            raise ApiError(401, "invalid_credentials")
        return JSONResponse({"key": self._add_key()})

    async def _create_key(self, request: Request) -> Response:
        return JSONResponse({"key": self._add_key()})

    def _add_key(self) -> str:
        key = new_id(32)
        self.keys.add(key)
        self._save_account()
        return key

    # -- videos ------------------------------------------------------------------------------------------

    async def _upload(self, request: Request) -> Response:
        svid = self._new_svid()
        folder = self._root / "videos" / svid
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file_not_provided")
            visibility = form_text(form, "visibility") or self.default_visibility
            if visibility not in VISIBILITIES:
                raise ApiError(400, "invalid_visibility")
            scid = form_text(form, "collection")
            collection = self._collection(scid) if scid else None
            self._spend_check()
            blob = await self._receive(upload, folder / "data")
            raw_name = upload.filename or ""
        if blob.size == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise ApiError(400, "file_not_provided")
        filename = base_name(raw_name) or "upload"
        probe = probe_media(blob.data, blob.size, blob.head)
        video = Video(
            svid=svid,
            fid=self._fid_for(blob.sha256),
            sha256=blob.sha256,
            filename=filename,
            title=_title_for(filename),
            description="",
            path=folder / "data",
            size=blob.size,
            duration=probe.duration,
            width=probe.width,
            height=probe.height,
            kind=probe.kind,
            tcreated=self._wall(),
            visibility=visibility,
            ready_at=self.now(),
        )
        self._register(video)
        if collection is not None:
            collection.members[svid] = self._wall()
            self._save_collections()
        self._spend()
        self.uploads += 1
        return JSONResponse(self._upload_shape(public_origin(self.base_url, request), video))

    async def _cut(self, request: Request) -> Response:
        async with request.form() as form:
            svid, start_raw, end_raw = (
                form_text(form, "svid"),
                form_text(form, "start"),
                form_text(form, "end"),
            )
        if not svid:
            raise ApiError(400, "svid_not_provided")
        if not start_raw:
            raise ApiError(400, "start_not_provided")
        if not end_raw:
            raise ApiError(400, "end_not_provided")
        source = self._video(svid)
        try:
            start, end = float(start_raw), float(end_raw)
        except ValueError:
            raise ApiError(400, "invalid_cut") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ApiError(400, "invalid_cut")
        if end > source.duration + 1e-6:
            raise ApiError(400, "invalid_cut")
        if self._ingesting(source):
            raise ApiError(400, "video_ingesting")
        new_svid = self._new_svid()
        target = self._root / "videos" / new_svid / "data"
        make_private_dirs(target.parent)
        data = await self._load(source) if source.kind == "wav" else None
        if data is not None:
            cut = await anyio.to_thread.run_sync(cut_wav, data, start, end)
            await anyio.Path(target).write_bytes(cut)
            sha, size = hashlib.sha256(cut).hexdigest(), len(cut)
        else:
            await anyio.to_thread.run_sync(shutil.copyfile, source.path, target)
            sha, size = source.sha256, source.size
        await anyio.Path(target).chmod(FILE_MODE)
        video = Video(
            svid=new_svid,
            fid=self._fid_for(sha),
            sha256=sha,
            filename=source.filename,
            title=source.title,
            description=source.description,
            path=target,
            size=size,
            duration=round(end - start, 3),
            width=source.width,
            height=source.height,
            kind=source.kind,
            tcreated=self._wall(),
            visibility=source.visibility,
            ready_at=self.now() + self.job_seconds,
        )
        self._register(video)
        shape = self._upload_shape(public_origin(self.base_url, request), video)
        return JSONResponse({**shape, "cut_svid": source.svid, "cut_start": start, "cut_end": end})

    async def _set_video(self, request: Request) -> Response:
        video = self._video_by_fid(request.path_params["fid"])
        body = await json_object(request)
        title, description = body.get("title"), body.get("description")
        visibility, domains = body.get("visibility"), body.get("domains")
        if title is not None and not isinstance(title, str):
            raise ApiError(400, "invalid_title")
        if description is not None and not isinstance(description, str):
            raise ApiError(400, "invalid_description")
        if visibility is not None and visibility not in VISIBILITIES:
            raise ApiError(400, "invalid_visibility")
        if domains is not None and not (
            isinstance(domains, list) and all(isinstance(d, str) for d in domains)
        ):
            raise ApiError(400, "invalid_domains")
        if title is not None:
            video.title = title
        if description is not None:
            video.description = description
        if visibility is not None:
            video.visibility = visibility
        if domains is not None:
            video.domains = list(domains)
        self._save_video(video)
        return success()

    async def _delete_video(self, request: Request) -> Response:
        video = self._video_by_fid(request.path_params["fid"])
        del self.videos[video.svid]
        del self._by_fid[video.fid]
        for collection in self.collections.values():
            collection.members.pop(video.svid, None)
        # Record first: a process stopped before the files go leaves an orphan folder, swept at start.
        self._forget_video(video)
        self._save_collections()
        await anyio.to_thread.run_sync(shutil.rmtree, video.path.parent, True)
        return success()

    async def _list_videos(self, request: Request) -> Response:
        origin = public_origin(self.base_url, request)
        return JSONResponse([self._full_shape(origin, v, own=True) for v in self.videos.values()])

    async def _get_video(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"], request)
        return JSONResponse(
            self._full_shape(public_origin(self.base_url, request), video, own=authed(request))
        )

    async def _info(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"], request)
        return JSONResponse(self._upload_shape(public_origin(self.base_url, request), video))

    async def _index(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        video = self._video(request.path_params["svid"], request)
        if kind not in INDEX_KINDS:
            raise ApiError(404, "not_found")
        if kind == "speech":
            segments = await self._segments(video)
            return JSONResponse([[s.start, s.end, s.word] for s in segments if s.label == "speech"])
        if kind == "sounds":
            return JSONResponse(sounds_map(await self._segments(video), video.duration))
        return JSONResponse([])

    async def _set_cover(self, request: Request) -> Response:
        video = self._video_by_fid(request.path_params["fid"])
        t_raw = request.query_params.get("t")
        if t_raw is not None and t_raw != "":
            try:
                t = float(t_raw)
            except ValueError:
                raise ApiError(400, "invalid_time") from None
            if not math.isfinite(t) or t < 0 or t > video.duration:
                raise ApiError(400, "invalid_time")
            video.cover_t, video.cover_path = t, None
            self._save_video(video)
            return success()
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file_not_provided")
            data = await upload.read()
        if not data:
            raise ApiError(400, "file_not_provided")
        if data.startswith(PNG_SIGNATURE):
            media_type = "image/png"
        elif data.startswith(b"\xff\xd8\xff"):
            media_type = "image/jpeg"
        else:
            raise ApiError(400, "unsupported_file")
        path = video.path.parent / "cover"
        await anyio.Path(path).write_bytes(data)
        await anyio.Path(path).chmod(FILE_MODE)
        video.cover_path, video.cover_type = path, media_type
        self._save_video(video)
        return success()

    # -- CDN ---------------------------------------------------------------------------------------------

    def _cdn_video(self, request: Request) -> Video:
        # GUESS: data URLs are CDN capability URLs (cdn.muse.ai/w/{fid}/...): the 64-hex fid is the
        # secret, and no Key is expected there, since a Key belongs to the API host, not the CDN.
        svid = self._by_fid.get(request.path_params["fid"])
        video = self.videos.get(svid or "")
        if video is None:
            raise ApiError(404, "not_found")
        return video

    async def _serve_data(self, request: Request) -> Response:
        video = self._cdn_video(request)
        if self._ingesting(video):
            raise ApiError(404, "not_found")
        video.views += 1
        self._save_video(video)
        media_type = "audio/wav" if video.kind == "wav" else mimetypes.guess_type(video.filename)[0]
        return FileResponse(video.path, media_type=media_type or "application/octet-stream")

    async def _serve_thumbnail(self, request: Request) -> Response:
        video = self._cdn_video(request)
        name = request.path_params["name"]
        if name == "thumbnail.jpg":
            if video.cover_path is not None:
                return FileResponse(video.cover_path, media_type=video.cover_type)
            t = video.cover_t
        else:
            match = _THUMB_FRAME.fullmatch(name)
            if match is None or int(match.group(1)) > video.duration:
                raise ApiError(404, "not_found")
            t = float(match.group(1))
        frame = png_bytes(*THUMB_SIZE, color_for(f"{video.fid}@{t:.2f}"))
        return Response(frame, media_type="image/png")

    # -- subtitles ---------------------------------------------------------------------------------------

    async def _upload_subtitles(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"])
        async with request.form() as form:
            upload = form.get("subtitles")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "subtitles_not_provided")
            data = await upload.read()
            filename = upload.filename or ""
        if not data:
            raise ApiError(400, "subtitles_not_provided")
        text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
        if not text.startswith("WEBVTT"):
            raise ApiError(400, "invalid_subtitles")
        base = base_name(filename)
        name = base.rsplit(".", 1)[0] if "." in base else base
        subid = self._unique_id(9, lambda c: c in video.subtitles)
        video.subtitles[subid] = Subtitle(subid, name or "subtitles", text)
        self._save_video(video)
        return JSONResponse({"id": subid, "name": video.subtitles[subid].name})

    async def _list_subtitles(self, request: Request) -> Response:
        video = self._video(request.path_params["svid"])
        return JSONResponse({s.id: s.name for s in video.subtitles.values()})

    def _subtitle(self, request: Request) -> tuple[Video, Subtitle]:
        video = self._video(request.path_params["svid"])
        subtitle = video.subtitles.get(request.path_params["subid"])
        if subtitle is None:
            raise ApiError(404, "not_found")
        return video, subtitle

    async def _get_subtitles(self, request: Request) -> Response:
        _video, subtitle = self._subtitle(request)
        return Response(subtitle.text, media_type="text/vtt")

    async def _rename_subtitles(self, request: Request) -> Response:
        video, subtitle = self._subtitle(request)
        async with request.form() as form:
            name = form_text(form, "name")
        if not name:
            raise ApiError(400, "name_not_provided")
        subtitle.name = name
        self._save_video(video)
        return success()

    async def _delete_subtitles(self, request: Request) -> Response:
        video, subtitle = self._subtitle(request)
        del video.subtitles[subtitle.id]
        self._save_video(video)
        return success()

    # -- collections -------------------------------------------------------------------------------------

    def _members(self, collection: Collection, *, public: bool = False) -> list[tuple[Video, int]]:
        out = []
        for svid, tadded in collection.members.items():
            video = self.videos.get(svid)
            if video is not None and not (public and video.visibility == "private"):
                out.append((video, tadded))
        return out

    async def _list_collections(self, request: Request) -> Response:
        origin = public_origin(self.base_url, request)
        full = request.query_params.get("metadata") == "full"
        out = []
        for c in self.collections.values():
            if full:
                videos = [self._collection_entry(origin, v, t) for v, t in self._members(c)]
            else:
                videos = [
                    {"svid": v.svid, "duration": v.duration, "fid": v.fid, "url": self._video_url(origin, v)}
                    for v, _t in self._members(c)
                ]
            out.append(
                {
                    "name": c.name,
                    "scid": c.scid,
                    "tcreated": c.tcreated,
                    "visibility": c.visibility,
                    "videos": videos,
                }
            )
        return JSONResponse(out)

    async def _get_collection(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        origin = public_origin(self.base_url, request)
        return JSONResponse(
            {
                "name": collection.name,
                "own": True,
                "visibility": collection.visibility,
                "videos": [self._collection_entry(origin, v, t) for v, t in self._members(collection)],
            }
        )

    async def _create_collection(self, request: Request) -> Response:
        body = await json_object(request)
        name = body.get("name")
        visibility = body.get("visibility", self.default_visibility)
        if name is None or name == "":
            raise ApiError(400, "name_not_provided")
        if not isinstance(name, str):
            raise ApiError(400, "invalid_name")
        if visibility not in VISIBILITIES:
            raise ApiError(400, "invalid_visibility")
        scid = self._new_svid()
        self.collections[scid] = Collection(scid, name, str(visibility), self._wall())
        self._save_collections()
        return JSONResponse({"scid": scid})

    async def _delete_collection(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        del self.collections[collection.scid]
        self._save_collections()
        return success()

    async def _collection_add(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        body = await json_object(request)
        svid = body.get("svid")
        if not isinstance(svid, str) or not svid:
            raise ApiError(400, "svid_not_provided")
        video = self._video(svid)
        collection.members.setdefault(video.svid, self._wall())
        self._save_collections()
        return success()

    async def _collection_remove(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        if collection.members.pop(request.path_params["svid"], None) is None:
            raise ApiError(404, "not_found")
        self._save_collections()
        return success()

    # -- search ------------------------------------------------------------------------------------------

    async def _search_owned(self, request: Request) -> Response:
        return await self._search(request, list(self.videos.values()))

    async def _search_channel(self, request: Request) -> Response:
        if request.path_params["channel"] != self.channel_id:
            raise ApiError(404, "not_found")
        return await self._search(request, [v for v in self.videos.values() if v.visibility == "public"])

    async def _search_collection(self, request: Request) -> Response:
        collection = self._collection(request.path_params["scid"])
        if collection.visibility == "private":
            raise ApiError(404, "not_found")
        return await self._search(request, [v for v, _t in self._members(collection, public=True)])

    async def _search_video(self, request: Request) -> Response:
        video = self.videos.get(request.path_params["svid"])
        if video is None or video.visibility == "private":
            raise ApiError(404, "not_found")
        return await self._search(request, [video])

    async def _search(self, request: Request, candidates: list[Video]) -> Response:
        terms = parse_query(request.query_params.get("q", ""))
        if not terms:
            raise ApiError(400, "q_not_provided")
        hits: list[tuple[int, int, str, list[float]]] = []
        for order, video in enumerate(candidates):
            if self._ingesting(video):
                continue
            times = await match_times(video, terms, self._segments)
            if times is not None:
                hits.append((-len(times), order, video.svid, times))
        hits.sort()
        return JSONResponse([[svid, times] for _n, _o, svid, times in hits])


def _title_for(filename: str) -> str:
    stem = filename.rsplit(".", 1)[0] if "." in filename.lstrip(".") else filename
    return stem.replace("_", " ").strip() or filename
