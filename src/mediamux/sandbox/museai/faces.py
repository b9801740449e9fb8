"""The account's faces database (``GET /faces/db``, ``POST /faces/modify`` on the jobs host).

Finished faces jobs feed it; labels given here also name the clusters in later faces results.
"""

from __future__ import annotations

from typing import Any

from mediamux.sandbox.museai.web import ApiError


class FacesDatabase:
    def __init__(self) -> None:
        self._detected: dict[str, dict[str, dict[str, Any]]] = {}  # cluster → face → moment
        self._deleted: dict[str, dict[str, Any]] = {}
        self._ignored: dict[str, dict[str, Any]] = {}
        self._cluster_of: dict[str, str] = {}
        self._labels: dict[str, str | None] = {}

    def state(self) -> dict[str, Any]:
        """Everything the database holds, as JSON (``restore`` reads it back)."""
        return {
            "detected": self._detected,
            "deleted": self._deleted,
            "ignored": self._ignored,
            "cluster_of": self._cluster_of,
            "labels": self._labels,
        }

    def restore(self, data: dict[str, Any]) -> None:
        parts = (data["detected"], data["deleted"], data["ignored"], data["cluster_of"], data["labels"])
        if not all(isinstance(part, dict) for part in parts):
            raise ValueError("bad faces database record")
        self._detected, self._deleted, self._ignored, self._cluster_of, self._labels = parts

    def label(self, cluster: str) -> str | None:
        return self._labels.get(cluster)

    def add(self, sha256: str, clusters: dict[str, dict[str, dict[str, Any]]]) -> None:
        """A finished faces job's clusters; faces already deleted or ignored stay where they are."""
        for cluster, faces in clusters.items():
            for face_id, moment in faces.items():
                if face_id in self._deleted or face_id in self._ignored:
                    continue
                self._cluster_of[face_id] = cluster
                self._detected.setdefault(cluster, {})[face_id] = {"f": sha256, **moment}

    def as_json(self) -> dict[str, Any]:
        return {
            "detected": {
                cluster: {
                    "label": self._labels.get(cluster),
                    "faces": {face: {"moment": m} for face, m in faces.items()},
                }
                for cluster, faces in self._detected.items()
            },
            "deleted": {face: {"moment": m} for face, m in self._deleted.items()},
            "ignored": {face: {"moment": m} for face, m in self._ignored.items()},
        }

    def modify(self, body: dict[str, Any]) -> None:
        """Apply a faces/modify body; every entry is checked first, so a bad one changes nothing."""
        known_faces = set(self._deleted) | set(self._ignored)
        for cluster_faces in self._detected.values():
            known_faces |= set(cluster_faces)
        for key, change in body.items():
            if not isinstance(change, dict):
                raise ApiError(400, "invalid_request")
            if "label" in change and change["label"] is not None and not isinstance(change["label"], str):
                raise ApiError(400, "invalid_request")
            if any(not isinstance(change.get(flag, False), bool) for flag in ("delete", "ignore", "purge")):
                raise ApiError(400, "invalid_request")
            if key not in self._detected and key not in known_faces:
                raise ApiError(404, "not_found")
        for key, change in body.items():
            if key in self._detected:
                cluster, faces = key, list(self._detected[key])
            else:
                cluster, faces = self._cluster_of.get(key, ""), [key]
            if "label" in change and cluster:
                self._labels[cluster] = change["label"]
            for face in faces:
                if change.get("purge"):
                    self._remove(face)
                    self._cluster_of.pop(face, None)
                elif change.get("delete"):
                    self._deleted[face] = self._remove(face)
                elif change.get("ignore"):
                    self._ignored[face] = self._remove(face)

    def _remove(self, face: str) -> dict[str, Any]:
        moment: dict[str, Any] = {}
        for cluster in list(self._detected):
            if face in self._detected[cluster]:
                moment = self._detected[cluster].pop(face)
                if not self._detected[cluster]:
                    del self._detected[cluster]
        for store in (self._deleted, self._ignored):
            if face in store:
                moment = store.pop(face)
        return moment
