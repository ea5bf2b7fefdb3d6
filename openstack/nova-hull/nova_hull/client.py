"""The node API's client: JSON over HTTP/1.1 on the node's unix socket, or over TLS with a
client certificate the node's CA signed (docs/api.md). The standard library only, so the
driver adds nothing to a Nova installation's dependencies.
"""

import http.client
import json
import socket
import ssl
import time
import urllib.parse


class HullError(Exception):
    """An answer of the node's API that is not a success, in its one error shape."""

    def __init__(self, status, code, message, body=None):
        super().__init__("%s %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


class Unreachable(Exception):
    """The node's API could not be reached at all."""


def _parse(payload):
    """An answer's body: JSON, else text, None when empty."""
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return payload.decode("utf-8", "replace")


def _error(status, answer):
    """The HullError of a parsed failure answer (the node's error shape, or whatever came)."""
    a = answer if isinstance(answer, dict) else {}
    return HullError(status, a.get("code", "HTTP%d" % status), a.get("message", str(answer)), a)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("hull", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Client:
    """One node. `socket_path` (the node's `var/run/hull/api.sock`) or `url`
    (`https://NODE:PORT`) with `ca_file`, `cert_file` and `key_file`."""

    def __init__(self, socket_path=None, url=None, ca_file=None, cert_file=None, key_file=None, timeout=60):
        if not socket_path and not url:
            raise ValueError("hull: set api_socket or api_url")
        self.socket_path = socket_path
        self.timeout = timeout
        self._tls = None
        if url:
            u = urllib.parse.urlsplit(url)
            if u.scheme != "https":
                raise ValueError("hull: api_url %r: the node serves HTTPS only" % url)
            self._host, self._port = u.hostname, u.port or 443
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
            self._tls = ctx

    def where(self):
        return self.socket_path or "https://%s:%s" % (self._host, self._port)

    def _connection(self, timeout):
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._tls)
        return _UnixConnection(self.socket_path, timeout)

    def _exchange(self, method, path, body=None, headers=None, timeout=None, sink=None):
        """(status, answer bytes) of one request; with `sink`, a success's body is written
        to it instead and the answer is its byte count."""
        conn = self._connection(timeout or self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            if sink is None or resp.status >= 400:
                return resp.status, resp.read()
            n = 0
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                sink.write(chunk)
                n += len(chunk)
            return resp.status, n
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable("hull node API at %s: %s" % (self.where(), e)) from e
        finally:
            conn.close()

    def request(self, method, path, body=None, query=None, raw=False, timeout=None):
        """(status, answer): the answer parsed as JSON, or bytes when `raw`."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        status, payload = self._exchange(method, path, data, headers, timeout)
        if raw and status < 400:
            return status, payload
        return status, _parse(payload)

    def download(self, path, out, timeout=None):
        """Streams a GET's body into the file object `out`; its byte count. HullError when
        the node refuses."""
        status, answer = self._exchange("GET", path, timeout=timeout, sink=out)
        if status >= 400:
            raise _error(status, _parse(answer))
        return answer

    def upload(self, path, f, size, timeout=None):
        """PUTs `size` bytes of the file object `f`; the answer, as call()'s."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        status, payload = self._exchange("PUT", path, f, headers, timeout)
        answer = _parse(payload)
        if status >= 400:
            raise _error(status, answer)
        return answer

    def call(self, method, path, body=None, query=None, raw=False, timeout=None):
        """The answer of a request that must succeed; HullError otherwise."""
        status, answer = self.request(method, path, body, query, raw=raw, timeout=timeout)
        if status >= 400:
            raise _error(status, answer)
        return answer

    def wait(self, job_uuid, timeout=600):
        """The job once it has ended (or as it is after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, min(600, int(deadline - time.monotonic())))
            job = self.call("GET", "/jobs/%s/wait" % job_uuid, query={"timeout": left}, timeout=left + 30)
            if job.get("execution") in ("succeeded", "failed") or time.monotonic() >= deadline:
                return job

    def change(self, method, path, body=None, query=None, timeout=600):
        """A change (a job): its result once it succeeded; HullError with the job's error
        when it failed."""
        accepted = self.call(method, path, body, query)
        job = self.wait(accepted["job_uuid"], timeout)
        if job.get("execution") != "succeeded":
            err = job.get("error") or {}
            raise HullError(
                409,
                err.get("code", "JobNotDone"),
                err.get("message", "job %s is %s" % (job.get("uuid"), job.get("execution"))),
                err,
            )
        return job.get("result")
