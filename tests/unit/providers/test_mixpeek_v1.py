"""Mixpeek v1 client on the wire: what each request carries (X-Namespace, only declared keys, the feature
URI the collection names, filters in v1's spelling) and how answers in every documented layout are read.
Shapes are from ``shared/providers/mixpeek-v1.md`` and the SDK 1.3.783 models it cites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest

from mediamux.providers.errors import ProviderResponseError
from mediamux.providers.mixpeek_filters import parse_filters
from mediamux.providers.mixpeek_v1 import Extraction, MixpeekV1Client, read_document
from tests.unit.conftest import KEY, Wire, answer

BASE = "https://api.mixpeek.com"
URI = "mixpeek://multimodal_extractor@v1/gemini_embedding_2"


def v1_error(status: int, message: str, code: str | None = None) -> httpx2.Response:
    error: dict[str, Any] = {"message": message, "type": "X"}
    if code:
        error["code"] = code
    return answer(status, {"success": False, "status": status, "error": error})


def collection_body(name: str, bucket: str = "bkt_1", uris: tuple[str, ...] = (URI,)) -> dict[str, Any]:
    return {
        "collection_id": f"col_{name}",
        "collection_name": name,
        "source": {"type": "bucket", "bucket_ids": [bucket]},
        "feature_extractor": {
            "feature_extractor_name": "multimodal_extractor",
            "version": "v1",
            "input_mappings": {"video": "video"},
            "parameters": {"run_transcription": True, "time_split_interval": 15},
            "field_passthrough": [{"source_path": "metadata"}],
        },
        "vector_indexes": [{"name": "e", "feature_uri": u} for u in uris],
    }


def client_on(wire: Callable[..., Wire], routes: dict[tuple[str, str], Any]) -> tuple[MixpeekV1Client, Wire]:
    """``routes``: (method, path) → a response, or a list of responses served in turn."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        found = routes.get((request.method, request.url.path))
        if found is None:
            return v1_error(404, f"no route {request.url.path}")
        if isinstance(found, list):
            return found.pop(0) if len(found) > 1 else found[0]
        return found  # type: ignore[no-any-return]

    w = wire("mixpeek", BASE, handler)
    return MixpeekV1Client(w.transport, namespace="team"), w


async def test_search_reads_each_collections_feature_uri_and_sends_one_v1_retriever(
    wire: Callable[..., Wire],
) -> None:
    document = {
        "document_id": "doc_1",
        "collection_id": "col_news",
        "score": 0.8,
        "payload": {"start_time": 10, "end_time": 20, "ocr_text": "SALE", "metadata": {"lang": "en"}},
        "_internal": {"lineage": {"root_object_id": "obj_9"}},
    }
    client, w = client_on(
        wire,
        {
            ("GET", "/v1/collections/news"): answer(200, collection_body("news")),
            ("GET", "/v1/collections/talks"): answer(200, collection_body("talks", "bkt_2")),
            ("GET", "/v1/collections/gone"): v1_error(404, "Collection 'gone' not found"),
            ("POST", "/v1/retrievers/execute"): answer(
                200, {"documents": [document], "pagination": {"total": 7}}
            ),
        },
    )
    v0_style = parse_filters({"NOR": [{"key": "metadata.lang", "operator": "eq", "value": "de"}]}, "v1")

    with anyio.fail_after(10):
        page = await client.search(
            "sale", ["news", "talks", "gone"], lexical=True, filters=v0_style, page=2, page_size=5
        )

    execute = w.sent[-1]
    assert execute.headers["x-namespace"] == "team"
    assert execute.json() == {
        "collection_identifiers": ["news", "talks"],
        "stages": [
            {
                "stage_name": "search",
                "stage_type": "filter",
                "config": {
                    "stage_id": "feature_search",
                    "parameters": {
                        "searches": [
                            {
                                "feature_uri": URI,
                                "query": {"input_mode": "text", "value": "sale"},
                                "top_k": 25,
                                "lexical": True,
                                "collection_identifiers": ["news", "talks"],
                            }
                        ],
                        "final_top_k": 25,
                    },
                },
            }
        ],
        "pagination": {"method": "offset", "page_size": 5, "page_number": 2},
        "filters": {"NOT": [{"field": "metadata.lang", "operator": "eq", "value": "de"}]},
    }
    assert (page.total, page.missing, page.unsearchable) == (7, ["gone"], [])
    (hit,) = page.documents
    assert (hit.object_id, hit.start_time, hit.ocr_text, hit.score, hit.metadata) == (
        "obj_9",
        10.0,
        "SALE",
        0.8,
        {"lang": "en"},
    )


async def test_collections_with_different_feature_uris_get_one_search_each(wire: Callable[..., Wire]) -> None:
    other = "mixpeek://multimodal_extractor@v1/multimodal_embedding"
    client, w = client_on(
        wire,
        {
            ("GET", "/v1/collections/news"): answer(200, collection_body("news")),
            ("GET", "/v1/collections/talks"): answer(200, collection_body("talks", uris=(other,))),
            ("GET", "/v1/collections/plain"): answer(200, collection_body("plain", uris=())),
            ("POST", "/v1/retrievers/execute"): answer(200, {"documents": []}),
        },
    )

    with anyio.fail_after(10):
        page = await client.search("dog", ["news", "talks", "plain"], lexical=False)

    searches = w.sent[-1].json()["stages"][0]["config"]["parameters"]["searches"]
    assert [(s["feature_uri"], s["collection_identifiers"]) for s in searches] == [
        (URI, ["news"]),
        (other, ["talks"]),
    ]
    assert page.unsearchable == ["plain"] and page.total is None


async def test_a_first_index_creates_namespace_bucket_and_collection_with_declared_keys_only(
    wire: Callable[..., Wire],
) -> None:
    made = collection_body("clips")
    client, w = client_on(
        wire,
        {
            ("GET", "/v1/namespaces/team"): v1_error(
                404, "Namespace 'team' not found", "namespace_not_found"
            ),
            ("POST", "/v1/namespaces"): answer(200, {"namespace_id": "ns_1", "namespace_name": "team"}),
            ("GET", "/v1/collections/clips"): [
                v1_error(404, "Collection 'clips' not found"),
                answer(200, made),
            ],
            ("GET", "/v1/buckets"): answer(200, {"results": [], "total_count": 0}),
            ("POST", "/v1/buckets"): answer(200, {"bucket_id": "bkt_1", "bucket_name": "clips"}),
            ("POST", "/v1/collections"): answer(200, made),
        },
    )

    with anyio.fail_after(10):
        ref = await client.collection(
            "clips", operation="index_url", create=Extraction(ocr=False, segment_s=15)
        )
        again = await client.collection("clips", operation="index_url", create=Extraction())

    assert ref is again and ref is not None
    assert (ref.bucket_id, ref.feature_uris, ref.video_property, ref.passes_metadata) == (
        "bkt_1",
        (URI,),
        "video",
        True,
    )
    calls = [(s.method, s.path, s.headers.get("x-namespace")) for s in w.sent]
    assert calls == [
        ("GET", "/v1/namespaces/team", None),
        ("POST", "/v1/namespaces", None),
        ("GET", "/v1/collections/clips", "team"),
        ("GET", "/v1/buckets", "team"),
        ("POST", "/v1/buckets", "team"),
        ("POST", "/v1/collections", "team"),
        ("GET", "/v1/collections/clips", "team"),
    ]
    assert w.sent[1].json() == {
        "namespace_name": "team",
        "description": "Created by mediamux (MIXPEEK_NAMESPACE)",
    }
    assert w.sent[4].json()["bucket_schema"] == {
        "properties": {"video": {"type": "video"}, "metadata": {"type": "object"}}
    }
    assert w.sent[5].json()["feature_extractor"] == {
        "feature_extractor_name": "multimodal_extractor",
        "version": "v1",
        "input_mappings": {"video": "video"},
        "parameters": {
            "split_method": "time",
            "time_split_interval": 15,
            "run_transcription": True,
            "run_video_description": True,
            "run_ocr": False,
            "run_multimodal_embedding": True,
        },
        "field_passthrough": [{"source_path": "metadata"}],
    }


async def test_a_create_that_conflicts_uses_what_the_other_creator_made(wire: Callable[..., Wire]) -> None:
    theirs = collection_body("clips", bucket="bkt_theirs")
    client, w = client_on(
        wire,
        {
            ("GET", "/v1/namespaces/team"): answer(200, {"namespace_id": "ns_1", "namespace_name": "team"}),
            ("GET", "/v1/collections/clips"): [v1_error(404, "not found"), answer(200, theirs)],
            ("GET", "/v1/buckets"): [
                answer(200, {"results": []}),
                answer(200, {"results": [{"bucket_id": "bkt_theirs", "bucket_name": "clips"}]}),
            ],
            ("POST", "/v1/buckets"): v1_error(409, "Bucket 'clips' already exists", "bucket_name_taken"),
            ("POST", "/v1/collections"): v1_error(409, "exists", "collection_name_taken"),
        },
    )

    with anyio.fail_after(10):
        ref = await client.collection("clips", operation="index_url", create=Extraction())

    assert ref is not None and ref.bucket_id == "bkt_theirs"
    assert w.sent[-2].json()["source"] == {"type": "bucket", "bucket_ids": ["bkt_theirs"]}


async def test_tasks_are_read_and_killed_without_x_namespace(wire: Callable[..., Wire]) -> None:
    task = {"task_id": "tsk_1", "task_type": "api_buckets_batches_process", "status": "COMPLETED_WITH_ERRORS",
            "additional_data": {"batch_id": "btch_1", "bucket_id": "bkt_1"}}  # fmt: skip
    client, w = client_on(
        wire,
        {
            ("GET", "/v1/tasks/tsk_1"): answer(200, task),
            ("DELETE", "/v1/tasks/tsk_1"): answer(200, {"message": "Task killed", "success": True}),
        },
    )

    with anyio.fail_after(10):
        read = await client.get_task("tsk_1")
        killed = await client.cancel_task("tsk_1")

    assert (read.status, read.batch_id, read.bucket_id) == ("COMPLETED_WITH_ERRORS", "btch_1", "bkt_1")
    assert killed == {"message": "Task killed", "success": True}
    assert all("x-namespace" not in s.headers for s in w.sent)


async def test_an_object_id_carrying_the_key_is_refused_as_possibly_acted_upon(
    wire: Callable[..., Wire],
) -> None:
    client, _ = client_on(
        wire, {("POST", "/v1/buckets/bkt_1/objects"): answer(200, {"object_id": f"obj_{KEY}"})}
    )

    with anyio.fail_after(10), pytest.raises(ProviderResponseError) as caught:
        await client.create_url_object(
            "bkt_1", "https://x.example.com/a.mp4", prop="video", metadata=None, operation="index_url"
        )

    assert caught.value.maybe_sent and KEY not in caught.value.message


def test_documents_are_read_whether_their_fields_sit_at_the_root_or_under_payload() -> None:
    root = read_document(
        {"document_id": "d", "start_time": "5", "transcription": "hi", "source_object_id": "obj_1"}
    )
    nested = read_document(
        {"document_id": "d", "payload": {"start_time": 5, "transcription": "hi"}, "object_id": "obj_1"}
    )
    odd = read_document({"document_id": 3, "start_time": True, "metadata": "x", "vectors": [0.1]})

    assert root is not None and nested is not None and odd is not None
    assert (root.start_time, root.transcription, root.object_id) == (5.0, "hi", "obj_1")
    assert (nested.start_time, nested.transcription, nested.object_id) == (5.0, "hi", "obj_1")
    assert (odd.document_id, odd.start_time, odd.metadata) == (None, None, None)
    assert read_document("not a document") is None
