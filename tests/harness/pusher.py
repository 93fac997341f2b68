"""Build a small schema2 image and push it to a registry over the Distribution HTTP API.

No docker and no network beyond the registry: one gzip tar layer made from the given files, a
config, a manifest. The output is deterministic (fixed mtimes), so digests are stable.

    python -m tests.harness.pusher http://allowed.registry.test:5000 demo/hello v1 \
        --file /tmp/hello:/hello:755 --cmd /hello [--cafile ca.crt] [--random-mb 100]

Inside the bed's network namespace it runs as `ip netns exec NS python -m tests.harness.pusher`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import ssl
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class LayerFile:
    path: str
    data: bytes
    mode: int = 0o644


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_layer(files: list[LayerFile]) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip tar) of the files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in files:
            info = tarfile.TarInfo(item.path.lstrip("/"))
            info.size = len(item.data)
            info.mode = item.mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(item.data))
    raw = buffer.getvalue()
    return raw, gzip.compress(raw, compresslevel=1, mtime=0)


class Registry:
    def __init__(self, base: str, cafile: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.context = ssl.create_default_context(cafile=cafile) if cafile else None

    def request(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        if url.startswith("/"):
            url = self.base + url
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310 (the test registry's own URL)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:  # noqa: S310 (the test registry's own URL)
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def push_blob(self, repository: str, blob: bytes) -> str:
        blob_digest = digest(blob)
        status, _, _ = self.request("HEAD", f"/v2/{repository}/blobs/{blob_digest}")
        if status == 200:
            return blob_digest
        status, headers, body = self.request("POST", f"/v2/{repository}/blobs/uploads/", b"")
        if status != 202:
            raise RuntimeError(f"starting an upload failed: {status} {body[:200]!r}")
        location = headers["Location"]
        separator = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(blob_digest)}",
            blob,
            {"Content-Type": "application/octet-stream"},
        )
        if status != 201:
            raise RuntimeError(f"uploading {blob_digest} failed: {status} {body[:200]!r}")
        return blob_digest

    def push_image(
        self, repository: str, tag: str, files: list[LayerFile], cmd: list[str] | None = None
    ) -> str:
        """Push a one-layer image; returns the manifest digest."""
        raw, compressed = build_layer(files)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": cmd or ["/hello"]},
                "rootfs": {"type": "layers", "diff_ids": [digest(raw)]},
                "history": [{"created_by": "regward test harness"}],
            },
            sort_keys=True,
        ).encode()
        layer_digest = self.push_blob(repository, compressed)
        config_digest = self.push_blob(repository, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "size": len(config), "digest": config_digest},
                "layers": [{"mediaType": LAYER, "size": len(compressed), "digest": layer_digest}],
            }
        ).encode()
        status, _, body = self.request(
            "PUT", f"/v2/{repository}/manifests/{tag}", manifest, {"Content-Type": MANIFEST}
        )
        if status != 201:
            raise RuntimeError(f"pushing the manifest failed: {status} {body[:200]!r}")
        return digest(manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", help="registry base URL, http://host:port or https://host")
    parser.add_argument("repository")
    parser.add_argument("tag")
    parser.add_argument("--file", action="append", default=[], help="SRC:DEST[:MODE]")
    parser.add_argument("--cmd", default="/hello")
    parser.add_argument("--cafile")
    parser.add_argument("--random-mb", type=int, default=0, help="add an incompressible file")
    args = parser.parse_args(argv)
    files = []
    for spec in args.file:
        source, dest, *mode = spec.split(":")
        with open(source, "rb") as stream:
            files.append(LayerFile(dest, stream.read(), int(mode[0], 8) if mode else 0o644))
    if args.random_mb:
        # Deterministic, incompressible filler: a SHA-256 counter stream.
        chunks = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(32768)]
        block = b"".join(chunks)  # 1 MiB
        data = b"".join(
            hashlib.sha256(n.to_bytes(4, "big")).digest()[:1] + block[1:]
            for n in range(args.random_mb)
        )
        files.append(LayerFile("/filler.bin", data))
    manifest = Registry(args.base, args.cafile).push_image(
        args.repository, args.tag, files, [args.cmd]
    )
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
