"""The independent peer of tests/object_store.rs: boto3 for S3 (moto's server), nats-py for the
JetStream object store. It puts sources and reads ladders back; every command prints one JSON
value on stdout. Never imports anything of ours.

  s3-put ENDPOINT BUCKET KEY FILE            -> {"etag": …, "md5": …}
  s3-tree ENDPOINT BUCKET PREFIX OUTDIR      -> {name: {"sha256", "size", "content_type", "etag_ok"}}
  s3-keys ENDPOINT BUCKET PREFIX             -> [key, …]
  s3-watch ENDPOINT BUCKET PREFIX SECONDS    -> {"master_seen": bool, "violations": [...]}
  nats-put URL BUCKET NAME FILE              -> {"digest": …}
  nats-tree URL BUCKET PREFIX OUTDIR         -> {name: {"sha256", "size", "content_type"}}
"""

import asyncio
import hashlib
import json
import os
import sys
import time

BOTO_CONFIG = dict(region_name="us-east-1", aws_access_key_id="peer", aws_secret_access_key="peer")


def s3(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}), **BOTO_CONFIG
    )


def s3_keys(client, bucket, prefix):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def cmd_s3_put(endpoint, bucket, key, path):
    c = s3(endpoint)
    try:
        c.create_bucket(Bucket=bucket)
    except c.exceptions.BucketAlreadyOwnedByYou:
        pass
    c.upload_file(path, bucket, key)
    head = c.head_object(Bucket=bucket, Key=key)
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest() if os.path.getsize(path) < 1 << 28 else None
    return {"etag": head["ETag"].strip('"'), "md5": md5}


def cmd_s3_tree(endpoint, bucket, prefix, outdir):
    c = s3(endpoint)
    os.makedirs(outdir, exist_ok=True)
    out = {}
    for key in s3_keys(c, bucket, prefix.rstrip("/") + "/"):
        obj = c.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        name = key[len(prefix.rstrip("/")) + 1 :]
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
        etag = obj["ETag"].strip('"')
        out[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "content_type": obj.get("ContentType"),
            # A single-part upload's ETag is the MD5 of what was stored.
            "etag_ok": "-" in etag or etag == hashlib.md5(data).hexdigest(),
        }
    return out


def cmd_s3_keys(endpoint, bucket, prefix):
    return s3_keys(s3(endpoint), bucket, prefix)


def cmd_s3_watch(endpoint, bucket, prefix, seconds):
    """Polls the prefix; the first time master.m3u8 is listed, every playlist it names and every
    segment those name must already be there (the master is the commit point)."""
    c = s3(endpoint)
    prefix = prefix.rstrip("/") + "/"
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            keys = set(s3_keys(c, bucket, prefix))
        except Exception:
            time.sleep(0.05)
            continue
        if prefix + "master.m3u8" in keys:
            violations = []
            master = c.get_object(Bucket=bucket, Key=prefix + "master.m3u8")["Body"].read().decode()
            for line in master.splitlines():
                if line and not line.startswith("#"):
                    if prefix + line not in keys:
                        violations.append(line)
                        continue
                    media = c.get_object(Bucket=bucket, Key=prefix + line)["Body"].read().decode()
                    for seg in media.splitlines():
                        if seg and not seg.startswith("#") and prefix + seg not in keys:
                            violations.append(seg)
            if prefix + "manifest.json" not in keys:
                violations.append("manifest.json")
            return {"master_seen": True, "violations": violations}
        time.sleep(0.05)
    return {"master_seen": False, "violations": []}


async def nats_store(url, bucket, create):
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    if create:
        try:
            return nc, await js.object_store(bucket)
        except Exception:
            return nc, await js.create_object_store(bucket)
    return nc, await js.object_store(bucket)


async def cmd_nats_put(url, bucket, name, path):
    nc, obs = await nats_store(url, bucket, True)
    with open(path, "rb") as f:
        info = await obs.put(name, f)
    await nc.close()
    return {"digest": info.digest, "size": info.size}


async def cmd_nats_tree(url, bucket, prefix, outdir):
    nc, obs = await nats_store(url, bucket, False)
    os.makedirs(outdir, exist_ok=True)
    out = {}
    prefix = prefix.rstrip("/") + "/"
    try:
        infos = await obs.list(ignore_deletes=True)
    except Exception:
        infos = []
    for info in infos:
        if not info.name.startswith(prefix) or info.deleted:
            continue
        # nats-py checks the object's SHA-256 digest itself (DigestMismatchError).
        res = await obs.get(info.name)
        name = info.name[len(prefix) :]
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(res.data)
        headers = info.headers or {}
        ctype = headers.get("Content-Type")
        if isinstance(ctype, list):
            ctype = ctype[0]
        out[name] = {
            "sha256": hashlib.sha256(res.data).hexdigest(),
            "size": len(res.data),
            "content_type": ctype,
        }
    await nc.close()
    return out


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = globals()["cmd_" + cmd.replace("-", "_")]
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
