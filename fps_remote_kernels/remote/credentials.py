"""The front's credentials for one remote: the auth header (scheme, header name, a token that
may come from a file that rotates), HTTP basic auth, and keeping every secret out of logs.

Named after jupyter_server's GatewayClient options (`auth_scheme`, `auth_header_key`,
`http_user`, `http_pwd`), so that its users find them here.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import structlog

from ..config import RemoteConfig
from .kernel_socket import HANDSHAKE_LOGGER

logger = structlog.get_logger()

# Jupyverse (fps-auth) keeps its session in this cookie; its kernel WebSocket accepts nothing else.
JUPYVERSE_AUTH_COOKIE = "fastapiusersauth"
# A token file larger than this is not a token (a mistaken path): refuse to read it whole.
_MAX_TOKEN_FILE_BYTES = 64 * 1024


class RemoteAuth:
    """What the front presents to one remote. `headers()` is cheap: a token file is re-read
    only when its modification time or size changed; `reload()` re-reads it at once (after a
    refusal: the file may have rotated within the same second)."""

    def __init__(self, remote: RemoteConfig) -> None:
        self.scheme = remote.auth_scheme
        self.header = remote.auth_header
        self._static_token = remote.resolved_token()
        self._token_file = Path(remote.token_file) if remote.token_file else None
        self._file_stamp: tuple[int, int] | None = None
        self._file_token: str | None = None
        self._basic: str | None = None
        password = remote.resolved_http_pwd()
        if remote.http_user is not None:
            pair = f"{remote.http_user}:{password or ''}".encode()
            self._basic = "Basic " + base64.b64encode(pair).decode()
            _redact_in_library_logs(self._basic.removeprefix("Basic "), "[credentials]")
            if password:
                _redact_in_library_logs(password, "[password]")
        if self._static_token:
            _redact_in_library_logs(self._static_token)
        if self._token_file is not None:
            self._read_token_file(force=True)

    @property
    def token(self) -> str | None:
        """The current token: from token_file when set (re-read if it changed), else the
        configured one."""
        if self._token_file is not None:
            self._read_token_file(force=False)
            return self._file_token
        return self._static_token

    def reload(self) -> bool:
        """Re-read the token file now; whether the token changed (worth a retry)."""
        if self._token_file is None:
            return False
        before = self._file_token
        self._read_token_file(force=True)
        return self._file_token != before

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        token = self.token
        if token:
            # As GatewayClient: `{auth_header_key}: {auth_scheme} {auth_token}`, or the bare
            # token when the scheme is empty.
            headers[self.header] = f"{self.scheme} {token}" if self.scheme else token
        if self._basic is not None:
            # A custom header (X-Auth-Token) leaves Authorization to basic auth; if both want
            # Authorization, basic auth is for the balancer in front (Knox) and wins.
            headers["Authorization"] = self._basic
        return headers

    def _read_token_file(self, *, force: bool) -> None:
        assert self._token_file is not None
        try:
            stat = self._token_file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if not force and stamp == self._file_stamp:
                return
            if stat.st_size > _MAX_TOKEN_FILE_BYTES:
                raise OSError("larger than a token")
            text = self._token_file.read_text(errors="replace").strip()
        except OSError as e:
            # Keep the last token: a projected volume is briefly absent while it is swapped.
            logger.warning("Cannot read the remote's token file", path=str(self._token_file),
                           error=type(e).__name__)
            return
        self._file_stamp = stamp
        if text != self._file_token:
            if text:
                _redact_in_library_logs(text)
            if self._file_token is not None:
                logger.info("The remote's token file changed: using the new token",
                            path=str(self._token_file))
            self._file_token = text or None


_AUTH_COOKIE_VALUE = re.compile(rf"({JUPYVERSE_AUTH_COOKIE}=)[^;,\s'\"]+")
# Every secret the front holds for any remote (tokens, also rotated ones; passwords).
_SECRETS: dict[str, str] = {}  # secret -> what the log shows instead


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret, label in _SECRETS.items():
            if secret in redacted:
                redacted = redacted.replace(secret, label)
        # The remote's session cookie opens the remote as the token does: scrub it too.
        redacted = _AUTH_COOKIE_VALUE.sub(r"\1[cookie]", redacted)
        if redacted != message:
            record.msg = redacted
            record.args = ()
        return True


_FILTER = _RedactSecrets()
# A logger's filters see only its own records, not its children's: name each one.
_LIBRARY_LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2",
                    "httpcore.connection", "websockets", "websockets.client",
                    HANDSHAKE_LOGGER)


def _redact_in_library_logs(secret: str, label: str = "[token]") -> None:
    # httpx logs request URLs (the Jupyverse login URL carries ?token=) and kernel_socket.py logs
    # handshake headers at debug level: scrub secrets from both, whatever the log configuration.
    if len(secret) < 4:
        return  # too short to scrub without mangling every line (and not a real secret)
    _SECRETS[secret] = label
    for name in _LIBRARY_LOGGERS:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)


def quiet_library_logs() -> None:
    # httpx logs every request at INFO (a line per proxied request is noise and costs time on
    # the hot path); our own structured logs say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in _LIBRARY_LOGGERS:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)  # the session cookie is scrubbed even without a token
