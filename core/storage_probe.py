"""Can a cloud storage be used? The search's plan and `python -m ensemble` / predict ask it the same way.

    check_cloud_storage(URI, flag)          raises StorageError with what to fix, else returns
    python -m core.storage_probe URI        the child it runs: one JSON line, {"ok": "<filesystem>"} or
                                            {"problem": ..., "detail": ...}

The child resolves the URI exactly as Ray Tune does (pyarrow.fs.FileSystem.from_uri), then asks the bucket
whether it exists with short timeouts and a single attempt (pyarrow retries S3/GCS calls for minutes by
default): a store that never answers costs a timeout, not a hang. The child imports pyarrow only.
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
    except Exception as err:  # hdfs without Java/libhdfs, S3 region lookup failing (no DNS, no network), ...
        return {"problem": "network" if _no_network(err) else "unusable", "detail": _first_line(err)}
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
        return {"problem": "network" if _no_network(err) else "unreachable", "detail": _first_line(err)}
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


def _no_network(err: BaseException) -> bool:
    text = str(err)
    return any(sign in text for sign in ("Could not resolve host", "curlCode: 6",
                                          "Name or service not known", "Temporary failure in name resolution"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


STORAGE_TIMEOUT_S = 30   # resolving an S3 bucket's region alone can take seconds when DNS is slow
CREDENTIALS = {"s3": "e.g. AWS_ACCESS_KEY_ID, or the node's IAM role",
               "gs": "e.g. GOOGLE_APPLICATION_CREDENTIALS, or the node's service account",
               "gcs": "e.g. GOOGLE_APPLICATION_CREDENTIALS, or the node's service account"}


def check_cloud_storage(storage: str, flag: str = "--storage") -> None:
    """One message for a cloud storage that cannot be used (StorageError, a UserError)."""
    import os
    import subprocess
    from pathlib import Path

    from core.storage import StorageError

    scheme = storage.split("://", 1)[0]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", "core.storage_probe", storage], capture_output=True, text=True,
                              timeout=STORAGE_TIMEOUT_S, env=env)
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        answer = {"problem": "unreachable", "detail": f"no answer within {STORAGE_TIMEOUT_S} s"}
    except (ValueError, IndexError):
        answer = {"problem": "unusable", "detail": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    problem, detail = answer.get("problem"), answer.get("detail", "")
    fix = {
        "unknown-scheme": f"the scheme {scheme + '://'!r} is not one Ray Tune's storage (pyarrow.fs) understands. "
                          "Use a local folder, s3://BUCKET/PATH or gs://BUCKET/PATH.",
        "invalid-uri": f"{detail}. Give s3://BUCKET/PATH (options after '?', e.g. "
                       "?endpoint_override=HOST:PORT&scheme=http) or gs://BUCKET/PATH.",
        "unusable": f"pyarrow cannot open {scheme}:// storage here ({detail}). Use a local folder, s3:// or gs://, "
                    "or install what this filesystem needs.",
        "network": f"the store cannot be reached: its host name does not resolve (network/DNS) on this machine ({detail}). Check the network "
                   "and DNS (or the endpoint_override host), then try again.",
        "no-bucket": f"the bucket {detail!r} does not exist (or these credentials cannot see it). Create it, or "
                     "fix the bucket name.",
        "is-file": f"{detail} is a file, not a folder. Give a folder path in the bucket.",
        "unreachable": f"the storage did not answer ({detail}). Check the endpoint, the network and the "
                       f"credentials ({CREDENTIALS.get(scheme, 'of this store')}).",
    }
    if problem:
        raise StorageError(f"{flag} {storage}: {fix.get(problem, detail)}")


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
