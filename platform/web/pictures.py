"""Presigned links to FAIL pictures in object storage, made only for rows in scope.

The station uploads a picture to ``{prefix}{site}/{station}/{YYYY-MM-DD}/{uuid}.jpg``
(:func:`kanjian.station.sync.messages.image_key`) and names bucket and key in its
message. A link is made only for a row the scoped SQL returned, and only when the
key the row names ends with that row's own ``{site}/{station}/{date}/{uuid}.jpg`` in
the bucket this page serves: a station cannot make the page sign someone else's
object by naming its key (another station's keys end with its own names and its own
inspection ids, which are unique). A presigned GET link is computed locally (no request to
the server) and lets the browser fetch that one object until it expires.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Link:
    """A picture's link, or why there is none (``url`` None, ``refused`` says why)."""

    url: str | None
    refused: str | None


class PictureLinks:
    """Signs GET links for pictures in one bucket.

    Args:
        client: a boto3 S3 client whose endpoint the browser can reach (the link
            carries its address).
        bucket: the bucket stations upload to.
        expires_s: how long a link works, seconds.
    """

    def __init__(self, client: Any, bucket: str, expires_s: int = 600) -> None:
        self.client, self.bucket, self.expires_s = client, bucket, expires_s

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the links (the page's CSP lets images come from it)."""
        parts = urlsplit(str(self.client.meta.endpoint_url))
        return f"{parts.scheme}://{parts.netloc}"

    def link(
        self, site: str, station: str, inspection_id: uuid.UUID, bucket: str | None, key: str
    ) -> Link:
        """A link to the picture of one inspection row (its site, station, id, bucket, key)."""
        if (bucket or self.bucket) != self.bucket:
            return Link(None, f"bucket {bucket!r} is not the one this platform serves")
        own = re.compile(
            rf"{re.escape(site)}/{re.escape(station)}/\d{{4}}-\d{{2}}-\d{{2}}/"
            rf"{re.escape(str(inspection_id))}\.jpg$"
        )
        if not own.search(key):
            return Link(None, "the key does not follow the station's own key scheme")
        url = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.expires_s,
        )
        return Link(str(url), None)
