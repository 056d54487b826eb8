"""The store's reach into private aiobotocore, aiohttp and asyncio surfaces stays in
``store/adapter.py``, and the installed versions still offer each: an upgrade that moves one
fails here, by name, instead of quietly slowing or breaking downloads. Importing the store
stays cheap (no AWS or HTTP library), for the command line's start."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiobotocore.httpsession import AIOHTTPSession

from ego4d_dl.config import Credentials, Endpoint
from ego4d_dl.store import S3Store
from ego4d_dl.store.adapter import client_surfaces_missing, missing_surfaces

SRC = Path(__file__).resolve().parent.parent / "src" / "ego4d_dl"
ADAPTER = SRC / "store" / "adapter.py"
_UPGRADE = (
    "the installed aiobotocore/aiohttp/Python moved what ego4d_dl/store/adapter.py relies on; "
    "adapt that module (and only it) to the new versions: "
)

# Attributes of other libraries' objects that only the adapter may touch.
_PRIVATE_ATTRIBUTES = frozenset(
    {"_session", "_endpoint", "_get_session", "__wrapped__", "max_size", "http_session"}
)
_PRIVATE_MODULES = frozenset(
    {
        "aiobotocore.httpsession",
        "aiobotocore.response",
        "aiobotocore.awsrequest",
        "botocore.awsrequest",
        "asyncio.selector_events",
    }
)


def test_the_private_surfaces_are_still_there() -> None:
    missing = missing_surfaces()
    assert missing == [], _UPGRADE + "; ".join(missing)


def test_a_client_still_sends_through_our_http_session() -> None:
    async def go() -> list[str]:
        store = S3Store(
            credentials=Credentials(access_key_id="AKIDEXAMPLE", secret_access_key="secret"),
            endpoint=Endpoint(url="http://127.0.0.1:9", region="us-east-1"),
            max_connections=2,
            stall_timeout_s=5,
        )
        async with store:  # makes the client; sends nothing
            return client_surfaces_missing(store._client)

    missing = asyncio.run(go())
    assert missing == [], _UPGRADE + "; ".join(missing)


def test_the_check_names_what_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    # What an aiobotocore that renamed its session hook would look like to the check.
    monkeypatch.delattr(AIOHTTPSession, "_get_session")
    assert missing_surfaces() == [
        "aiobotocore AIOHTTPSession.send calling self._get_session(proxy_url)"
    ]


def _reaches(path: Path) -> list[str]:
    """Where ``path`` touches a private surface of another library."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in _PRIVATE_ATTRIBUTES
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
            "getattr",
            "setattr",
            "hasattr",
        ):
            names = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            found.extend(
                f"{path.name}:{node.lineno} {n!r}" for n in names if n in _PRIVATE_ATTRIBUTES
            )
        elif isinstance(node, ast.ImportFrom) and node.module in _PRIVATE_MODULES:
            found.append(f"{path.name}:{node.lineno} from {node.module}")
        elif isinstance(node, ast.Import):
            found.extend(
                f"{path.name}:{node.lineno} import {a.name}"
                for a in node.names
                if a.name in _PRIVATE_MODULES
            )
    return found


def test_only_the_adapter_reaches_into_private_surfaces() -> None:
    assert _reaches(ADAPTER), "the check sees nothing in the adapter: it checks nothing"
    elsewhere = [hit for p in sorted(SRC.rglob("*.py")) if p != ADAPTER for hit in _reaches(p)]
    assert elsewhere == [], "move these into ego4d_dl/store/adapter.py: " + ", ".join(elsewhere)


_HEAVY = ("aioboto3", "aiobotocore", "botocore", "aiohttp")


def _loaded_after(statements: str) -> list[str]:
    """Which of ``_HEAVY`` a fresh interpreter has loaded after running ``statements``."""
    script = (
        f"import json, sys\n{statements}\n"
        f"print(json.dumps(sorted(m for m in {_HEAVY!r} if m in sys.modules)))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(ran.stdout)
    return loaded


def test_importing_the_store_loads_no_aws_or_http_library() -> None:
    assert (
        _loaded_after(
            "import ego4d_dl.store, ego4d_dl.credentials, ego4d_dl.regions\n"
            "from ego4d_dl.config import Credentials, Endpoint\n"
            "from ego4d_dl.store import S3Store, ObjectStore, ObjectHead, RangeBody\n"
            "S3Store(credentials=Credentials(), endpoint=Endpoint(), max_connections=1,"
            " stall_timeout_s=1)"
        )
        == []
    )
    # What a connecting store imports does load them: the check sees what it claims to. Never
    # aioboto3: its session's S3 customisations would import boto3 and s3transfer as well.
    assert _loaded_after(
        "import ego4d_dl.store.adapter\n"
        "from ego4d_dl.config import Credentials\n"
        "from ego4d_dl.credentials import make_session\n"
        "make_session(Credentials(access_key_id='AKIDEXAMPLE', secret_access_key='secret'))"
    ) == sorted(set(_HEAVY) - {"aioboto3"})


@pytest.mark.parametrize(
    ("url", "proxy", "plain"),
    [
        ("http://127.0.0.1:9000", None, True),
        ("HTTP://127.0.0.1:9000", None, True),
        ("https://127.0.0.1:9000", None, False),
        (None, None, False),  # AWS itself: TLS
        ("http://127.0.0.1:9000", "https://proxy.example:3128", False),  # TLS to the proxy
    ],
)
def test_only_a_plain_http_endpoint_without_a_proxy_skips_tls(
    monkeypatch: pytest.MonkeyPatch, url: str | None, proxy: str | None, plain: bool
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy is not None:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    store = S3Store(
        credentials=Credentials(access_key_id="AKIDEXAMPLE", secret_access_key="secret"),
        endpoint=Endpoint(url=url),
        max_connections=1,
        stall_timeout_s=1,
    )
    assert store._plain_http() is plain
