"""Uploads a file to the librarian with tuspy, the tus project's Python client, resuming
an earlier attempt recorded in STORAGE (tuspy's URL storage, keyed by the file's
fingerprint). Prints one JSON line per step, flushed, so that a test can kill it (or the
server) at a chosen offset:

    {"event": "start", "url": URL, "offset": N}   (N > 0: resumed)
    {"event": "chunk", "offset": N}               (after each acknowledged PATCH)
    {"event": "done", "url": URL, "file": ID}

usage: tus_client.py ENDPOINT FILE STORAGE [--chunk BYTES] [--pause SECS]
ENDPOINT is the creation URL, e.g. http://127.0.0.1:8080/buckets/isos/uploads.
"""

import argparse
import json
import os
import sys
import time

import requests
from tusclient import client
from tusclient.storage.filestorage import FileStorage


def say(**event):
    print(json.dumps(event), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument("storage")
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()

    tus = client.TusClient(args.endpoint)
    uploader = tus.uploader(
        args.file,
        chunk_size=args.chunk,
        metadata={
            "filename": os.path.basename(args.file),
            "filetype": "application/x-iso9660-image",
        },
        store_url=True,
        url_storage=FileStorage(args.storage),
        upload_checksum=True,
        retries=0,
    )
    if not uploader.url:
        uploader.set_url(uploader.create_url())
        uploader.offset = 0
    say(event="start", url=uploader.url, offset=uploader.offset)
    size = uploader.get_file_size()
    uploader.stop_at = size
    while uploader.offset < size:
        uploader.upload_chunk()
        say(event="chunk", offset=uploader.offset)
        if args.pause:
            time.sleep(args.pause)
    head = requests.head(uploader.url, headers={"Tus-Resumable": "1.0.0"})
    say(event="done", url=uploader.url, file=int(head.headers["x-file-id"]))


if __name__ == "__main__":
    sys.exit(main())
