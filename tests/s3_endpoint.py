"""A real S3 endpoint for the tests: moto's server mode on a loopback port, started by the test suite.

Requests are served one at a time, as a single S3 node applies each write atomically: moto's threaded
server checks ``If-None-Match`` and then stores in two steps, so two threads could both pass the check,
which no real store allows. HTTP/1.0 (werkzeug's choice for a single-threaded server) closes each
connection after its response, so one slow client never holds the others up for long.
"""

from __future__ import annotations

import logging
import threading
from typing import Any


class S3Endpoint:
    ACCESS_KEY_ID = "AKIAMEDIAMUXTEST0001"
    # Never printed by mediamux: the tests look for it in every result and log line.
    SECRET_ACCESS_KEY = "mediamux-test-secret-Qm9vIHRoZSBidWNrZXQ"
    REGION = "eu-west-1"

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = make_server(
            "127.0.0.1",
            0,
            DomainDispatcherApplication(create_backend_app),
            threaded=False,
            request_handler=MotoRequestHandler,
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-endpoint", daemon=True)
        self._thread.start()
        import boto3

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.ACCESS_KEY_ID,
            aws_secret_access_key=self.SECRET_ACCESS_KEY,
            region_name=self.REGION,
        )

    def env(self) -> dict[str, str]:
        """The variables a mediamux process needs to reach this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_ACCESS_KEY,
            "AWS_REGION": self.REGION,
        }

    def create_bucket(self, name: str, *, versioned: bool = False) -> str:
        self.client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.REGION})
        if versioned:
            # Every successful write becomes a version: the count says how often an object was written.
            self.client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def versions(self, bucket: str, key: str) -> list[dict[str, Any]]:
        found = self.client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
        return [v for v in found if v["Key"] == key]

    def get(self, bucket: str, key: str) -> tuple[bytes, str]:
        answer = self.client.get_object(Bucket=bucket, Key=key)
        return answer["Body"].read(), answer["ContentType"]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
