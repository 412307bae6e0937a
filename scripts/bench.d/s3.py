#!/usr/bin/env python3
"""s3.py ENV_FILE {check | du PREFIX | rm PREFIX}

A minimal S3 client (standard library only, AWS Signature V4, path-style requests) for
the benchmark's S3 runs: the env file is the one scripts/garage writes (`export
AWS_ENDPOINT_URL=...`, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
GIT_MODEL_TEST_S3_BUCKET).

  check        exit 0 when the bucket answers a listing (prints the endpoint and bucket)
  du PREFIX    prints the total bytes and the number of objects below PREFIX
  rm PREFIX    deletes every object below PREFIX

Only what the benchmark needs: no retries, no multipart, no TLS options.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

EMPTY = hashlib.sha256(b"").hexdigest()


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k] = v.strip("'\"")
    return env


class S3:
    def __init__(self, env):
        self.endpoint = env["AWS_ENDPOINT_URL"].rstrip("/")
        self.region = env["AWS_REGION"]
        self.key = env["AWS_ACCESS_KEY_ID"]
        self.secret = env["AWS_SECRET_ACCESS_KEY"]
        self.bucket = env["GIT_MODEL_TEST_S3_BUCKET"]
        self.host = urllib.parse.urlsplit(self.endpoint).netloc

    def request(self, method, key="", query=None):
        query = sorted((query or {}).items())
        path = "/" + self.bucket + ("/" + urllib.parse.quote(key, safe="/~") if key else "")
        qs = "&".join(f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}"
                      for k, v in query)
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self.host, "x-amz-content-sha256": EMPTY, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, qs]
                              + [f"{k}:{headers[k]}" for k in sorted(headers)]
                              + ["", signed, EMPTY])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        req = urllib.request.Request(self.endpoint + path + ("?" + qs if qs else ""),
                                     method=method)
        for h, v in headers.items():
            if h != "host":
                req.add_header(h, v)
        req.add_header("Authorization", f"AWS4-HMAC-SHA256 Credential={self.key}/{scope}, "
                                        f"SignedHeaders={signed}, Signature={sig}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()

    def list(self, prefix):
        """(key, size) of every object below prefix."""
        token = None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self.request("GET", query=q))
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for c in root.iter(ns + "Contents"):
                yield c.find(ns + "Key").text, int(c.find(ns + "Size").text)
            token = root.findtext(ns + "NextContinuationToken")
            if root.findtext(ns + "IsTruncated") != "true" or not token:
                return


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd = sys.argv[2]
    try:
        s3 = S3(read_env(sys.argv[1]))
    except (OSError, KeyError) as e:
        sys.exit(f"s3.py {cmd}: env file {sys.argv[1]}: {e!r}")
    try:
        if cmd == "check":
            s3.request("GET", query={"list-type": "2", "max-keys": "1"})
            print(f"{s3.endpoint} bucket {s3.bucket}")
        elif cmd == "du":
            objs = list(s3.list(sys.argv[3]))
            print(sum(size for _, size in objs), len(objs))
        elif cmd == "rm":
            for key, _ in list(s3.list(sys.argv[3])):
                s3.request("DELETE", key)
        else:
            sys.exit(__doc__)
    except (urllib.error.URLError, OSError, KeyError) as e:
        sys.exit(f"s3.py {cmd}: {s3.endpoint} bucket {s3.bucket}: {e}")


if __name__ == "__main__":
    main()
