"""A stateful emulator of the live Mixpeek v1 API (``https://api.mixpeek.com/v1/...``), as an ASGI app.

Written from the v1 contract (``mixpeek-v1.md``, ``mixpeek-v1-operations.txt`` and the SDK 1.3.783 models
it cites), not from any client code. The older quickstart API has its own emulator,
:mod:`mediamux.sandbox.mixpeek`, whose deterministic content (durations, transcripts, descriptions, OCR
lines, similarity scores) this one reuses so both generations describe a video alike.

Endpoints
---------
``POST /v1/namespaces``, ``GET /v1/namespaces/{name or id}``; ``POST /v1/buckets``, ``GET /v1/buckets``
(``?search=``), ``GET /v1/buckets/{id or name}``; ``POST /v1/collections``, ``GET /v1/collections/{id or
name}``; ``POST /v1/buckets/{b}/objects``; ``POST /v1/buckets/{b}/uploads``, ``PUT`` to the presigned URL,
``POST /v1/buckets/{b}/uploads/{id}/confirm``; ``POST /v1/buckets/{b}/batches``, ``.../batches/list``,
``GET .../batches/{id}``, ``POST .../batches/{id}/submit``, ``GET /v1/batches/{id}``; ``GET`` and ``DELETE
/v1/tasks/{id}``; ``GET /v1/objects/{id}/documents``; ``POST /v1/retrievers/execute``.

Every call needs ``Authorization: Bearer <key>`` (401 otherwise), except the presigned storage URLs, whose
signature is their credential. Every call but namespace create/read and tasks needs ``X-Namespace`` (name or
id): 400 ``namespace_required`` without it, 404 ``namespace_not_found`` for an unknown one.

Errors use the v1 body ``{"success": false, "status", "error": {"message", "type", "code"?,
"details"?}}``; 422 lists every refused field in ``details.validation_errors`` (``{loc, msg, type}``).
Bodies may only carry the keys the SDK declares (422 ``extra_forbidden``), and object bodies only the
bucket schema's fields besides. :meth:`MixpeekV1Emulator.throttle` makes the service answer 429 with
``details.retry_after_seconds`` (and ``Retry-After`` if asked).

Lifecycle (on the injected ``now()``)
-------------------------------------
A batch is DRAFT until submitted; then it and its task are PENDING, IN_PROGRESS and PROCESSING for
``stage_seconds`` each (the batch record says IN_PROGRESS for both of the latter), then COMPLETED. Its
documents are written then, but they are searchable, listed and ``documents_resolvable`` only
``resolve_seconds`` later (half a stage by default): until then the batch is "finalizing". A task leaves
the store ``task_ttl_s`` (24 h) after its batch finished and answers 404; the batch record stays.

Failure modes, decided without any network access: a URL the service could not download (a ``*.invalid``
or ``localhost`` host, a private IP, a path containing ``404``) FAILS the batch at the end of IN_PROGRESS
with ``failure_reason``; a video whose URL or file name contains ``no_audio`` indexed by a collection that
transcribes ends COMPLETED_WITH_ERRORS: its documents are written without transcription and the object is
listed in ``partial_objects``. ``DELETE /v1/tasks/{id}`` cancels an unfinished batch (CANCELED, no
documents).

Documents
---------
One per time segment (``time_split_interval``, default 10 s) of the video, whose length is 20-300 s
decided by its URL (or, for uploads, the MP4's own duration, else the file's hash). Each carries
``document_id, collection_id, start_time, end_time``, ``transcription`` / ``description`` / ``ocr_text``
for the extractor flags that are on (null otherwise), ``thumbnail_url`` (a real PNG), the collection's
``field_passthrough`` fields at the root, and ``_internal.lineage.root_object_id``. A collection with the
multimodal embedding on has one vector index, ``mixpeek://multimodal_extractor@v1/<embedding_output>``;
retriever searches must name a URI the collection has.

Choices where the contract is silent (GUESSES)
----------------------------------------------
- Namespace, bucket and collection names are unique within their scope: a second create answers 409
  (``*_name_taken``). Buckets and collections are addressed by id or name.
- ``idempotency_key`` on an object returns the existing object of that key in the bucket.
- Presigned uploads enforce their signature, expiry and Content-Type (S3-style XML 403s) and answer an
  ``ETag`` (the MD5 in quotes); confirm checks the ETag and size when given and creates the object with
  ``object_metadata`` as its root fields.
- ``GET /v1/objects/{id}/documents`` answers ``{object_id, total_documents, documents}``, resolvable
  documents only.
- Retriever execute: only ``feature_search`` stages; ``filters`` apply before the search; results are
  ``documents`` with their fields at the root plus ``score``, paged by offset pagination (default 10).
- Batch cost: 10 credits per started minute of video at $0.001 a credit once COMPLETED, 0 before and
  for failed or cancelled batches.
- Killing a finished task answers 200 ``{"message": "Task already finished", "success": false}``.
- Webhooks: a submission's ``webhook_url`` gets one POST as the batch finishes (COMPLETED,
  COMPLETED_WITH_ERRORS, FAILED or CANCELED), carrying the contract's fields ``batch_id, status,
  failure_reason, documents_written, progress`` (100) and ``completed_at``; it is unsigned, not retried,
  and ``http://`` URLs are accepted so loopback receivers work. It is sent by the app's lifespan loop
  (or ``deliver_due_webhooks()``), when the batch is COMPLETED, before its documents are resolvable.
"""

from mediamux.sandbox.mixpeek_v1.emulator import NO_AUDIO_MARK, TASK_TTL_S, MixpeekV1Emulator

__all__ = ["NO_AUDIO_MARK", "TASK_TTL_S", "MixpeekV1Emulator"]
