"""Signed URLs: the message, the signature, the server's check and the sign command."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from darkroom_gpu.cli import main
from darkroom_gpu.errors import ForbiddenError
from darkroom_gpu.signing import sign, signing_message, verify
from tests.conftest import ClientFactory, source_settings

KEY = "0123456789abcdef0123"
OLD_KEY = "fedcba9876543210fedc"


def test_message_sorts_and_encodes_parameters() -> None:
    message = signing_message("/team/café.jpg", [("w", "300"), ("bg", "ff00ff"), ("v", "9")])
    assert message == "/team/café.jpg?bg=ff00ff&w=300".encode()


def test_message_encodes_reserved_characters() -> None:
    message = signing_message("/a b.jpg", [("crop", "top,left"), ("auto", "format")])
    assert message == b"/a b.jpg?auto=format&crop=top%2Cleft"


def test_message_without_transform_is_path() -> None:
    assert signing_message("/x.jpg", [("s", "abc"), ("v", "1")]) == b"/x.jpg"


def test_signature_is_urlsafe_hmac_sha256() -> None:
    digest = hmac.new(KEY.encode(), b"/x.jpg?w=10", hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert sign(KEY, "/x.jpg", [("w", "10")]) == expected
    assert "=" not in expected


def test_known_signature_vector() -> None:
    query = [("w", "300"), ("fit", "crop"), ("v", "2")]
    assert sign(KEY, "/team/café.jpg", query) == "Gqp9e6S1cpqDqG0nxgQ3Ln63vF6w5ll_nM4IGab2_jg"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param([("w", "10")], "missing", id="missing"),
        pytest.param([("w", "10"), ("s", "nope")], "does not match", id="wrong"),
        pytest.param([("s", "a"), ("s", "b")], "single signature", id="twice"),
    ],
)
def test_verify_rejects(query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ForbiddenError, match=message):
        verify([KEY], "/x.jpg", query)


def test_verify_accepts_any_key() -> None:
    query = [("w", "10")]
    query.append(("s", sign(OLD_KEY, "/x.jpg", query)))
    verify([KEY, OLD_KEY], "/x.jpg", query)


def signed(path: str, query: str, key: str = KEY) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return f"{path}?{query}&s={sign(key, path, pairs)}"


async def test_server_accepts_signed_url(make_client: ClientFactory, image_root: Path) -> None:
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=(KEY,)))
    response = await client.get(signed("/team/DSCN0010.jpg", "w=40"))
    assert response.status == 200


async def test_server_accepts_rotated_key(make_client: ClientFactory, image_root: Path) -> None:
    keys = (KEY, OLD_KEY)
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=keys))
    response = await client.get(signed("/team/DSCN0010.jpg", "w=40", key=OLD_KEY))
    assert response.status == 200


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("/team/DSCN0010.jpg?w=40", id="unsigned"),
        pytest.param("/team/DSCN0010.jpg?w=40&s=AAAA", id="bad signature"),
        pytest.param(
            signed("/team/DSCN0010.jpg", "w=40").replace("w=40", "w=41"), id="changed width"
        ),
        pytest.param(
            signed("/team/DSCN0010.jpg", "w=40").replace("DSCN0010", "jolla"), id="other file"
        ),
        pytest.param("/team/DSCN0010.jpg", id="passthrough unsigned"),
    ],
)
async def test_server_rejects_bad_signature(
    make_client: ClientFactory, image_root: Path, url: str
) -> None:
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=(KEY,)))
    response = await client.get(url)
    body = await response.json()
    assert response.status == 403
    assert body["error"]["code"] == "forbidden"
    assert response.headers["Cache-Control"] == "no-store"


async def test_cache_buster_keeps_signature_valid(
    make_client: ClientFactory, image_root: Path
) -> None:
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=(KEY,)))
    response = await client.get(signed("/team/DSCN0010.jpg", "w=40") + "&v=7")
    assert response.status == 200


async def test_sign_command_output_is_accepted(
    make_client: ClientFactory, image_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sign", "--key", KEY, "/team/DSCN0010.jpg?w=40&mono=000000"]) == 0
    url = capsys.readouterr().out.strip()
    client = await make_client(source_settings(image_root, prefix="/team", signing_keys=(KEY,)))
    response = await client.get(url)
    assert urlsplit(url).path == "/team/DSCN0010.jpg"
    assert response.status == 200


def test_sign_command_reads_key_from_config(
    tmp_path: Path, image_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "darkroom.yaml"
    config.write_text(
        "sources:\n"
        f"  - {{name: team, prefix: /team, kind: filesystem, root: {image_root},"
        f" signing_keys: [{KEY}]}}\n"
    )
    code = main(["sign", "--config", str(config), "--source", "team", "/team/x.jpg?w=1"])
    assert code == 0
    assert capsys.readouterr().out.strip() == signed("/team/x.jpg", "w=1")


def test_sign_command_unknown_source_exits_2(tmp_path: Path, image_root: Path) -> None:
    config = tmp_path / "darkroom.yaml"
    config.write_text(f"sources: [{{name: team, kind: filesystem, root: {image_root}}}]\n")
    assert main(["sign", "--config", str(config), "--source", "team", "/x.jpg"]) == 2
