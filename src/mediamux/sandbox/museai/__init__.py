"""A stateful emulator of the muse.ai API, as two Starlette ASGI apps (the main host and the AI-jobs host).

Written from the provider documents (`museai-api.txt` and NOTES §1), not from any client code. ``app`` plays
``https://muse.ai`` (clients use ``{origin}/api`` as their base URL) and also serves the CDN paths the video
objects point at; ``jobs_app`` plays ``https://api.muse.ai``.

Endpoints
---------
Main host (``app``)::

    POST   /api/auth/login                          JSON {email, passwd} → {"key"}            (no Key)
    POST   /api/auth/keys                           → {"key"} (an additional key)
    POST   /api/files/upload                        multipart file [+ visibility, collection] → video
    POST   /api/files/cut                           multipart svid, start, end → new video (ingesting)
    POST   /api/files/set/{fid}                     JSON title/description/visibility/domains
    POST   /api/files/set/{fid}/cover               ?t=seconds, or multipart file (PNG/JPEG)
    DELETE /api/files/delete/{fid}
    GET    /api/files/videos                        own videos (list shape)
    GET    /api/files/videos/{svid}                 (Key optional: without it, non-private only)
    GET    /api/files/info/{svid}                   (Key optional) upload-shaped video object
    GET    /api/files/i/{kind}/{svid}               (Key optional) speech → [[start, end, word]], sounds →
                                                    the sounds map, scenes/text/actions/faces → []
    POST   /api/files/subtitles/{svid}              multipart subtitles (.vtt) → {"id", "name"}
    GET    /api/files/subtitles/{svid}              → {subid: name}
    GET    /api/files/subtitles/{svid}/{subid}      → the WebVTT text (text/vtt)
    POST   /api/files/subtitles/{svid}/{subid}/set  multipart name
    POST   /api/files/subtitles/{svid}/{subid}/delete
    GET    /api/files/collections                   [?metadata=full]
    POST   /api/files/collections                   JSON {name, visibility} → {"scid"}
    GET    /api/files/collections/{scid}
    DELETE /api/files/collections/{scid}
    POST   /api/files/collections/{scid}/add        JSON {svid}
    DELETE /api/files/collections/{scid}/{svid}
    GET    /api/search?q=                           own videos, any visibility
    GET    /api/search/channel/{channel_id}?q=      (no Key) public videos of the channel
    GET    /api/search/collection/{scid}?q=         (no Key) a public or unlisted collection
    GET    /api/search/video/{svid}?q=              (no Key) a public or unlisted video
    GET    /w/{fid}/data                            the stored bytes (the video object's ``url``)
    GET    /w/{fid}/thumbnails/thumbnail.jpg        the cover; /w/{fid}/thumbnails/{NNNNN}.jpg a frame at t

Jobs host (``jobs_app``)::

    POST   /{job}          job ∈ speech, align, sounds, colors, faces, objects, text; multipart file
                           (+ phrase for align) → {"id": "<64 hex>"}
    GET    /{job}/{id}     {"status": "pending"} → {"status": "done", <result>} | {"status": "error", ...}
    GET    /faces/db       {"detected": {...}, "deleted": {...}, "ignored": {...}}
    POST   /faces/modify   JSON {id: {label, delete, ignore, purge}} → {"status": "ok"}
    /api/*                 every main-host /api route as well (NOTES GUESS: both hosts route /api/files/*)

Authentication is the ``Key`` header. Each request is logged in ``requests`` as (method, path), with paths of
the jobs host prefixed ``jobs:``; ``faults`` (see ``faults.py``) applies to both apps.

Modules: ``emulator`` (``MuseaiEmulator``, both apps), ``routes_files`` (main host and CDN), ``routes_jobs``
(jobs host), ``faces`` (the faces database), ``search`` (the query language), ``analysis`` (what a file is
and says, from its bytes), ``core`` (state and lookups shared by the routes), ``state`` (records), ``web``
(middleware, error bodies, body readers).

Error codes (body ``{"error": "<code>"}``)
-----------------------------------------
- 400 ``file_not_provided``: upload, AI job or cover without a (non-empty) multipart ``file`` (a cover
  needs ``?t=`` or ``file``).
- 400 ``subtitles_not_provided``, ``name_not_provided``, ``svid_not_provided``, ``start_not_provided``,
  ``end_not_provided``, ``phrase_not_provided``, ``email_not_provided``, ``passwd_not_provided``,
  ``q_not_provided``: the named parameter is missing (or blank).
- 400 ``invalid_cut``: start/end not numbers, start < 0, end > duration or end <= start.
- 400 ``invalid_time``: cover ``t`` not a number or outside [0, duration].
- 400 ``invalid_visibility``, ``invalid_title``, ``invalid_description``, ``invalid_domains``,
  ``invalid_name``: a field of the wrong type or value.
- 400 ``invalid_json``: a JSON body that does not parse or is not an object (the document's faces/modify
  example with Python ``False`` is not JSON and is rejected).
- 400 ``invalid_request``: a malformed multipart body, or a faces/modify entry of the wrong shape.
- 400 ``invalid_subtitles``: a subtitle file that does not start with ``WEBVTT``.
- 400 ``unsupported_file``: colors on anything but an 8-bit non-interlaced grey/RGB/RGBA PNG; a cover
  image that is neither PNG nor JPEG.
- 400 ``video_ingesting``: cutting a video that is still ingesting.
- 401 ``unauthorized``: no ``Key`` on an endpoint that needs one; ``invalid_key``: a ``Key`` that is not
  valid (on any endpoint but login); ``invalid_credentials``: login with a wrong email or password.
- 402 ``not_enough_credits``: see credits below.
- 404 ``not_found``: unknown (or, without a Key, private) video, collection, subtitle, channel, face or
  job id; an AI job result more than an hour after completion; unknown routes.
- 405 ``method_not_allowed``.

Choices where the documents are silent (GUESSES)
-----------------------------------------------
- Upload ``visibility`` defaults to ``private`` (the PHP wrapper's comment; the document's example shows
  ``public`` without saying what was sent). ``default_visibility`` can be changed on the instance. New
  collections default to ``private`` too.
- ``fid`` = sha256 of the stored bytes; when another stored video already has that fid, random decimal
  digits are appended ("64 chars + a random number sometimes", NOTES §1.3).
- Title = file name without extension, underscores → spaces (the document's example).
- Duration: a WAV's header (frames / rate); an MP4's ``moov/mvhd``; 0.0 for a PNG; otherwise
  ``max(1.0, size / 125000)`` s (1 Mbit/s), rounded to 2 decimals. Width × height: a PNG's real size;
  0 × 0 for WAV audio; 1280 × 720 otherwise.
- Upload responses carry ``ingesting: false`` at once (as in the document's example); list/get add
  ``mature: false``, ``own`` (true with a Key), ``views`` (counts fetches of the data URL) and ``twatched: 0``.
- Cut: multipart text fields; the response is the full new video object (with ``fid`` and ``url``) plus
  ``cut_svid``, ``cut_start``, ``cut_end``; it stays ``ingesting`` for ``job_seconds`` of ``now()``. A WAV
  is really cut (16-bit mono); other files keep the source bytes. Cuts are not charged.
- ``files/set``, cover, delete, subtitle rename/delete, collection delete/add/remove answer
  ``{"status": "success"}``. ``domains`` is stored but not echoed in video objects.
- Private videos' data/thumbnail URLs need a valid Key (404 without); an ingesting video's data is 404.
  A cover set by ``?t=`` is a generated PNG frame (served as image/png under the CDN's ``.jpg`` name).
- Unlisted = reachable by id without a Key (video get/info/index, video and collection search), but not in
  channel search. Searches skip ingesting videos. There is one account, one channel (``channel_id``,
  derived from ``login_email``) and every key sees everything.
- Search: whitespace-separated terms, all must match (AND); ``s:``/``speech:``, ``n:``/``title:``/``name:``,
  ``d:``/``description:``, ``z:``/``sound:`` (speech, music, silence) are indexed; ``f: t: o: a:`` and their
  long forms match nothing; an unprefixed term matches title, description or speech. A term may be a
  ``"quoted phrase"``. Matching is on whole words, case-insensitive. Times: speech/sound hits give their
  start times, title/description hits give 0.0; a video's times are the sorted union over its terms.
  Results are ordered by number of times (descending), then upload order.
- Speech of a file (search ``s:``, ``files/i/speech``, the speech and align jobs): if a stored video with
  the same bytes has ``transcript: <text>`` in its title or description, those words, spread evenly over
  its duration. Otherwise, for a WAV: its voiced stretches (20 ms frames with RMS ≥ ``SILENCE_RMS`` on the
  16-bit scale; gaps < 0.1 s merged); each stretch's pitch comes from its zero crossings; stretches under
  1000 Hz are speech and say ``SPEECH_WORDS[int(pitch // 100) % 10]`` (a 440 Hz tone says "echo"), the rest
  are music. Other files: ``max(1, min(12, duration // 2))`` evenly spaced words picked from the sha256.
- AI jobs: ``pending`` for ``job_seconds`` of ``now()``, then ``done``; results answer 404 from 3600 s after
  completion. A file name containing ``[fail]`` ends ``{"status": "error", "error": "job_failed"}``
  (its content is not examined).
  Results: speech ``{"transcript"}``; align ``{"words": [[s, e, word]]}`` (the phrase's words, punctuation
  dropped, spread over the file's voiced span in proportion to their length); sounds ``{"sounds"}`` with
  all five keys (silence = the gaps, laughter/applause always empty); colors ``{"colors"}`` with all eleven
  names, the share of opaque pixels nearest each (HSV rules in ``classify_color``), 3 decimals;
  faces/objects/text: deterministic boxes from the file's sha256 (the same file always gives the same ids).
- Faces db: a done faces job adds its faces under ``detected`` (faces already deleted or ignored stay
  there). faces/modify keys may be cluster or face ids; ``label`` (str or null) names the cluster (and
  later results of that cluster), ``delete``/``ignore`` move faces to ``deleted``/``ignored``, ``purge``
  forgets them; false flags do nothing; precedence purge > delete > ignore; empty clusters disappear.
  Unknown ids → 404 and nothing changes.
- Credits: ``credits=None`` means unlimited. Otherwise every upload and every AI job submission costs 1;
  with 0 left they answer 402 ``not_enough_credits`` (after request validation, before any work).
  Failed jobs are not refunded.
- State folder (``state_dir``, see ``sandbox/store.py``): videos with their files, covers and subtitles,
  collections, AI jobs (their results still gone an hour after completion, counted across downtime), the
  faces database, keys and credits outlive a restart. ``credits`` and the master key describe a new
  account; a stored account keeps its own credits, and the master key is always accepted.
"""

from mediamux.sandbox.museai.analysis import (
    COLOR_NAMES,
    SPEECH_WORDS,
    MediaProbe,
    Segment,
    analyse_audio,
    classify_color,
    color_proportions,
    face_clusters,
    pitch_word,
    probe_media,
    wav_segments,
)
from mediamux.sandbox.museai.emulator import MuseaiEmulator
from mediamux.sandbox.museai.state import JOB_KINDS

__all__ = [
    "COLOR_NAMES",
    "JOB_KINDS",
    "SPEECH_WORDS",
    "MediaProbe",
    "MuseaiEmulator",
    "Segment",
    "analyse_audio",
    "classify_color",
    "color_proportions",
    "face_clusters",
    "pitch_word",
    "probe_media",
    "wav_segments",
]
