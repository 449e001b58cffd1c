"""The one redaction: credentials replaced by ``***`` in every value that leaves the process (the envcheck JSON,
the environment fingerprint in every benchmark JSON and journal line, the reports, ``detbench-ab``'s files).

A setting whose name reads as a secret (``HF_TOKEN``, ``MY_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``PGPASSWORD``)
is hidden whole; in any other value, what reads as a credential is: URL user info
(``https://user:pw@registry/...``, also without a scheme), ``key=value`` / ``key: value`` pairs and ``--key value`` /
``--key=value`` options whose key reads as a secret (URL queries: ``?token=``, ``X-Amz-Signature=``, ``sig=``; DSNs:
``password=``; headers: ``Authorization: Bearer ...``), bearer tokens (any case of the scheme word: ``token X``),
the password of a ``user:password`` given to a user option (``curl -u``, ``--user``), ``-p X`` of the clients whose
``-p`` is a password (mysql, mariadb, sshpass), and the path of webhook URLs. Image tags
(``nvcr.io/nvidia/pytorch:24.05-py3``), digests and paths stay readable.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
# A name reads as a secret when one of its words is one of these (words: split at non-alphanumerics and at
# camelCase: accessToken, X-Amz-Signature, MY_API_KEY) ...
SECRET_WORDS = frozenset({
    "TOKEN", "TOKENS", "KEY", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PWD", "PASSPHRASE", "CREDENTIAL",
    "CREDENTIALS", "CREDS", "AUTH", "AUTHORIZATION", "JWT", "PAT", "SIG", "SIGNATURE", "BEARER", "COOKIE", "APIKEY",
})
# ... or when its letters, run together, hold one of these (PGPASSWORD, APIKEY, SECRETACCESSKEY, DB_PASSPHRASE).
SECRET_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "APIKEY", "ACCESSKEY",
                "PRIVATEKEY", "SECRETKEY", "SIGNATURE", "AUTHORIZATION")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# webhook URLs whose path is the credential
_WEBHOOK = re.compile(
    r"(?P<base>https?://(?:hooks\.slack\.com|discord(?:app)?\.com/api/webhooks|[a-z0-9.-]*webhook\.office\.com)"
    r")/[^\s'\"]*"
)
# scheme://userinfo@ : the password may hold "/" and "@", so userinfo runs to the last "@" before the host
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s@'\"]*(?:@[^\s@'\"]*)*@(?=[^\s@'\"]*)")
# user:password@host without a scheme (a registry reference); a digest (image@sha256:...) is not one
_BARE_USERINFO = re.compile(r"(?P<lead>^|(?<=[\s='\"]))[^\s/@:'\"=]+:[^\s/@'\"]+@(?![a-z0-9]+:[0-9a-fA-F]{32,})"
                            r"(?=[A-Za-z0-9])")
# key=value, key: value (a header, YAML), "key": "value" (JSON) and --key value / --key=value; the key is judged
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_KEY_VALUE = re.compile(
    r"(?P<key>(?<![\w.-])[A-Za-z_][\w.-]*)(?P<q>['\"]?)(?P<sep>\s*=\s*|:\s+|:(?=['\"])|\s*:\s*(?=['\"]))"
    rf"(?P<value>(?i:Bearer|Basic|Digest|Token)\s+[^\s'\"&;]+|{_QUOTED}|[^\s&;'\"]+)"
)
_OPTION_VALUE = re.compile(
    rf"(?P<key>(?<![\w-])--?[A-Za-z][\w.-]*)(?P<sep>\s+|=)(?P<value>{_QUOTED}|(?<==)[^\s]+|[^\s-][^\s]*)")
# user:password given to a user option (curl -u, --user, --proxy-user, psql -U): the user stays readable
_USER_PASSWORD = re.compile(r"(?P<key>(?<![\w-])(?:-u|-U|--user|--username|--proxy-user|--basic-auth)(?:\s+|=))"
                            r"(?P<quote>['\"]?)(?P<user>[^\s:'\"]+):(?P<password>[^\s'\"]+)")
# -p PASSWORD / -pPASSWORD of the clients whose -p is a password (for most programs -p is a port or a plugin)
_PASSWORD_P = re.compile(r"(?P<lead>\b(?:mysql|mysqldump|mysqladmin|mysqlsh|mariadb|mariadb-dump|sshpass)\b"
                         r"[^|;&\n]*?\s-p)(?P<sep>\s*)(?P<value>[^\s-][^\s]*)")
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer)\s+(?P<value>[A-Za-z0-9._~+/=-]+)")


def is_secret_name(name: str) -> bool:
    """Whether a setting, query parameter or header of this name holds a credential (see SECRET_WORDS)."""
    words = {w.upper() for w in _WORD.findall(name)}
    letters = re.sub(r"[^A-Z0-9]", "", name.upper())
    return bool(words & SECRET_WORDS) or any(part in letters for part in SECRET_PARTS)


def redact_value(value: str) -> str:
    """Credentials inside a value replaced by '***' (see the module docstring); anything else unchanged."""
    value = _WEBHOOK.sub(lambda m: f"{m['base']}/{REDACTED}", value)
    value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", value)
    value = _BARE_USERINFO.sub(lambda m: f"{m['lead']}{REDACTED}@", value)
    value = _USER_PASSWORD.sub(lambda m: f"{m['key']}{m['quote']}{m['user']}:{REDACTED}", value)
    value = _PASSWORD_P.sub(lambda m: f"{m['lead']}{m['sep']}{REDACTED}", value)
    value = _KEY_VALUE.sub(_hide_if_secret, value)
    value = _OPTION_VALUE.sub(_hide_if_secret, value)
    return _BEARER.sub(lambda m: f"{m['scheme']} {REDACTED}", value)


def _hide_if_secret(match: re.Match[str]) -> str:
    """The pair with its value hidden when the key reads as a secret; else the value itself redacted (it may hold
    a pair of its own: ``note: password=x``)."""
    before, value = match[0][: match.start("value") - match.start()], match["value"]
    if not is_secret_name(match["key"].lstrip("-")):
        return before + redact_value(value)
    if value.startswith(REDACTED):
        return match[0]
    quote = value[0] if value[:1] in ("'", '"') else ""
    scheme = value.split(None, 1)[0] + " " if re.match(r"(?i:Bearer|Basic|Digest|Token)\s", value) else ""
    return before + f"{quote}{scheme}{REDACTED}{quote}"


def redact_setting(name: str, value: str) -> str:
    """A setting's value as it may be published: '***' when the name reads as a secret, else the value with the
    credentials inside it redacted (:func:`redact_value`)."""
    return REDACTED if is_secret_name(name) else redact_value(value)


def redact_tree(value: Any) -> Any:
    """Every string in a JSON-like tree (dicts, lists) redacted; a dict's values by their key's name."""
    if isinstance(value, str):
        return redact_value(value)
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and isinstance(v, str) and is_secret_name(k) else redact_tree(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(item) for item in value]
    return value
