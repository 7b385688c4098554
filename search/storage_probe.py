"""Can Tune's storage be used? Run in a child process, so a store that never answers costs a timeout, not a hang.

    python search/storage_probe.py URI     ->  one JSON line: {"ok": "<filesystem>"} or {"problem": ..., "detail": ...}

Resolves the URI exactly as Ray Tune does (pyarrow.fs.FileSystem.from_uri), then asks the bucket whether it
exists with short timeouts and a single attempt (pyarrow retries S3/GCS calls for minutes by default).
Imports pyarrow only: no project modules, so it runs as a plain script.
"""
from __future__ import annotations

import json
import sys
from datetime import timedelta

REQUEST_TIMEOUT_S = 5.0


def probe(uri: str) -> dict:
    import pyarrow
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except pyarrow.ArrowInvalid as err:  # an unknown scheme, or a URI pyarrow cannot parse
        unknown = "Unrecognized filesystem type" in str(err)
        return {"problem": "unknown-scheme" if unknown else "invalid-uri", "detail": _first_line(err)}
    except Exception as err:  # hdfs without Java/libhdfs, S3 region lookup failing, ...
        return {"problem": "unusable", "detail": _first_line(err)}
    fs = _with_short_timeouts(fs)
    bucket = path.split("/", 1)[0]
    if not bucket:
        return {"problem": "invalid-uri", "detail": "no bucket name after the scheme"}
    try:
        bucket_info = fs.get_file_info(bucket)
        if bucket_info.type == pafs.FileType.NotFound:
            return {"problem": "no-bucket", "detail": bucket}
        target = fs.get_file_info(path.rstrip("/"))
        if target.type == pafs.FileType.File:
            return {"problem": "is-file", "detail": path}
    except Exception as err:  # unreachable endpoint, no credentials, access denied
        return {"problem": "unreachable", "detail": _first_line(err)}
    return {"ok": type(fs).__name__}


def _with_short_timeouts(fs):
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.S3FileSystem):
        _, (options,) = fs.__reduce__()
        options.update(connect_timeout=REQUEST_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
                       retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        return pafs.S3FileSystem(**options)
    if isinstance(fs, pafs.GcsFileSystem):
        _, (options,) = fs.__reduce__()
        options.update(retry_time_limit=timedelta(seconds=REQUEST_TIMEOUT_S))
        return pafs.GcsFileSystem(**options)
    return fs


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
