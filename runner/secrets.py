"""What counts as a secret: the one place that decides what is secret.

The chart's ``sweep.isSecretName`` (helm/sweep/templates/_helpers.tpl) is held to it by
tests/test_secrets.py, which renders the chart's helper for a list of names and compares
its answers with :func:`is_secret_name`.

- :func:`is_secret_name`: does a key or variable name hold a credential? A token rule:
  the name is split into words (``AWS_SECRET_ACCESS_KEY``, ``sessionToken``,
  ``api-key``), a word like ``key``/``secret``/``token`` makes it a secret, unless the
  last word makes it a *reference* to one (``secretName``, ``role_arn``,
  ``private_key_id``) or it reads "... from ..." (``env_from_secret``). Whole words
  only: ``keyword``, ``monkey`` and ``tokenizer`` are not secrets.
- :func:`literal_secrets`: where literal credentials sit in a nested mapping
  (``storage_options.key``), for refusing them where they would be written out.
- :func:`redact`: a copy fit to write anywhere (manifests, logs, JSON output), with
  the values of secret keys and the passwords of URLs replaced by ``***``.
- :func:`redact_url`: the password of every ``scheme://user:password@host`` in a text.

Everything here is pure: nothing is read or contacted, inputs are never modified.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MASK",
    "REFERENCE_PARTS",
    "SECRET_PARTS",
    "is_secret_name",
    "literal_secrets",
    "redact",
    "redact_url",
]

#: what a redacted value becomes
MASK = "***"

#: words that make a name a credential
SECRET_PARTS = frozenset(
    {
        "secret",
        "key",
        "token",
        "password",
        "passwd",
        "credential",
        "credentials",
        "session",
        "webhook",
    }
)

#: a name ending in one of these words refers to a credential instead of holding it
REFERENCE_PARTS = frozenset({"name", "names", "ref", "from", "file", "path", "arn", "id"})

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")
#: a URL-looking token: a scheme, ``://`` and everything up to whitespace or a quote
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]*")


def is_secret_name(name: Any) -> bool:
    """Does a key or variable name look like it holds a credential (not a reference to one)?

    Parameters
    ----------
    name
        A mapping key or an environment variable name (non-strings are converted
        with ``str``).

    Returns
    -------
    bool
        ``True`` for ``AWS_SECRET_ACCESS_KEY``, ``key``, ``sessionToken``, ``api_key``;
        ``False`` for references (``secretName``, ``env_from_secret``, ``role_arn``,
        ``private_key_id``) and for names that merely contain a secret word
        (``keyword``, ``monkey``, ``tokenizer``).

    Notes
    -----
    camelCase is split into words (``sessionToken`` -> ``session``, ``token``), then the
    name is lowercased and split on everything but ``[a-z0-9]``. It is a secret when a
    word is in :data:`SECRET_PARTS`, unless the last word is in :data:`REFERENCE_PARTS`
    or a word is ``from``.
    """
    spaced = _CAMEL.sub(r"\1_\2", str(name)).lower()
    parts = [p for p in _SEPARATORS.split(spaced) if p]
    if not parts or parts[-1] in REFERENCE_PARTS or "from" in parts:
        return False
    return any(p in SECRET_PARTS for p in parts)


def literal_secrets(obj: Any, path: str = "") -> list[str]:
    """Paths of literal strings under secret-looking keys, e.g. ``storage_options.key``.

    Parameters
    ----------
    obj
        A nested structure of mappings and lists (e.g. a spec's ``storage_options``).
    path
        Prefix of the reported paths.

    Returns
    -------
    list of str
        Dotted paths (``a.b``, ``a[0].key``) of non-empty strings whose key
        :func:`is_secret_name` calls a secret, in document order. The values
        themselves are never part of the result.
    """
    found: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            sub = f"{path}.{k}" if path else str(k)
            if isinstance(v, str):
                if v and is_secret_name(str(k)):
                    found.append(sub)
            else:
                found.extend(literal_secrets(v, sub))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(literal_secrets(v, f"{path}[{i}]"))
    return found


def _redact_one_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:end]
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon and password:
            return f"{scheme}{sep}{user}:{MASK}@{host}{rest[end:]}"
        return url
    # No '@' before the first '/': a password holding '/', '?' or '#' unencoded (AWS
    # secret keys often hold '/') ends the authority early. Redact it all the same,
    # unless what follows the ':' is a port (``http://host:8080/path@x``).
    at = rest.find("@")
    if at < 0:
        return url
    user, colon, password = rest[:at].partition(":")
    if not colon or not password or any(c in user for c in "/?#"):
        return url
    if re.fullmatch(r"\d+", re.split(r"[/?#]", password, maxsplit=1)[0]):
        return url
    return f"{scheme}{sep}{user}:{MASK}@{rest[at + 1 :]}"


def redact_url(url: str) -> str:
    """Replace the password of every ``scheme://user:password@host/...`` in a text.

    Parameters
    ----------
    url
        A URL, or any text that may contain URLs (an error message, a command line).

    Returns
    -------
    str
        The text with each URL password replaced by ``***`` (``s3://AKIA:***@bucket/x``);
        the user name, host and path stay. Text without URL credentials is returned
        unchanged.

    Notes
    -----
    A password is what follows the first ``:`` of the URL's userinfo (before the last
    ``@`` of its authority). One written unencoded with a ``/`` in it still counts.
    """
    if "://" not in url or "@" not in url:
        return url
    return _URL.sub(lambda m: _redact_one_url(m.group(0)), url)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def redact(obj: Any) -> Any:
    """A deep copy of ``obj`` fit to be written anywhere: no credential values left.

    Parameters
    ----------
    obj
        A nested structure of mappings, lists and tuples (a spec as a dict, a summary).

    Returns
    -------
    Any
        A new structure (``obj`` is not modified) in which

        - every value under a key :func:`is_secret_name` calls a secret becomes
          ``"***"`` unless it is ``None`` or ``""`` (a whole nested mapping too);
        - every string, at any depth, has its URL passwords replaced
          (:func:`redact_url`).

        Mappings come back as ``dict``; lists and tuples keep their type. References
        such as ``secretName: my-secret`` are kept.
    """
    if isinstance(obj, Mapping):
        return {
            k: MASK if not _empty(v) and is_secret_name(k) else redact(v) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        items = [redact(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, str):
        return redact_url(obj)
    return copy.deepcopy(obj)
