"""Tests for the filesystem source, strict path decoding and routing requests to sources."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from darkroom_gpu.config import SourceSettings
from darkroom_gpu.errors import InvalidPathError, NotFoundError, UnprocessableImageError
from darkroom_gpu.server.router import SourceRouter, decode_path
from darkroom_gpu.sources import FilesystemSource
from darkroom_gpu.sources.filesystem import FilesystemOptions

MAX_BYTES = 1024 * 1024
PHOTO_BYTES = b"\xff\xd8\xff\xe0 not a real photo, only bytes to read back"
SECRET_BYTES = b"outside the root"
# 2001-09-09 01:46:40 UTC, an exact float so that st_mtime round-trips without rounding.
FIXED_MTIME = 1_000_000_000


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the root, with ``secret.jpg`` that no fetch may read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.jpg").write_bytes(SECRET_BYTES)
    return folder


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    """The served folder: ``photo.jpg``, ``sub/nested.jpg`` and an empty ``empty-dir``."""
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "empty-dir").mkdir()
    (folder / "photo.jpg").write_bytes(PHOTO_BYTES)
    (folder / "sub" / "nested.jpg").write_bytes(b"nested")
    return folder


@pytest.fixture
def source(root: Path) -> FilesystemSource:
    return FilesystemSource(source_settings("local", root))


# --- FilesystemSource: reading -------------------------------------------------------------


async def test_fetch_returns_file_bytes(source: FilesystemSource) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO_BYTES


async def test_fetch_nested_file(source: FilesystemSource) -> None:
    fetched = await source.fetch("sub/nested.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == b"nested"


async def test_fetch_leading_slash_is_not_found(source: FilesystemSource) -> None:
    # The router removes the slash after the route; another one is an empty segment, which
    # would make a second URL for the same file.
    with pytest.raises(NotFoundError):
        await source.fetch("/photo.jpg", max_bytes=MAX_BYTES)


async def test_fetch_last_modified_from_mtime(source: FilesystemSource, root: Path) -> None:
    os.utime(root / "photo.jpg", (FIXED_MTIME, FIXED_MTIME))

    fetched = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.last_modified == datetime.fromtimestamp(FIXED_MTIME, tz=UTC)


async def test_fetch_identity_stable_for_same_file(source: FilesystemSource) -> None:
    first = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    second = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert first.identity == second.identity


async def test_fetch_identity_changes_with_content(source: FilesystemSource, root: Path) -> None:
    photo = root / "photo.jpg"
    os.utime(photo, (FIXED_MTIME, FIXED_MTIME))
    before = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    photo.write_bytes(PHOTO_BYTES + b" and more")
    os.utime(photo, (FIXED_MTIME, FIXED_MTIME))

    after = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert after.identity != before.identity


async def test_fetch_identity_changes_with_mtime(source: FilesystemSource, root: Path) -> None:
    photo = root / "photo.jpg"
    os.utime(photo, (FIXED_MTIME, FIXED_MTIME))
    before = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    photo.write_bytes(PHOTO_BYTES.upper())
    os.utime(photo, (FIXED_MTIME + 1, FIXED_MTIME + 1))

    after = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert after.identity != before.identity


async def test_fetch_identity_differs_between_files(source: FilesystemSource, root: Path) -> None:
    (root / "copy.jpg").write_bytes(PHOTO_BYTES)
    os.utime(root / "copy.jpg", (FIXED_MTIME, FIXED_MTIME))
    os.utime(root / "photo.jpg", (FIXED_MTIME, FIXED_MTIME))

    photo = await source.fetch("photo.jpg", max_bytes=MAX_BYTES)
    copy = await source.fetch("copy.jpg", max_bytes=MAX_BYTES)

    assert photo.identity != copy.identity


async def test_fetch_at_max_bytes_allowed(source: FilesystemSource) -> None:
    fetched = await source.fetch("photo.jpg", max_bytes=len(PHOTO_BYTES))

    assert fetched.data == PHOTO_BYTES


async def test_fetch_over_max_bytes_rejected(source: FilesystemSource) -> None:
    with pytest.raises(UnprocessableImageError, match="over this source's limit of 5"):
        await source.fetch("photo.jpg", max_bytes=5)


async def test_fetch_through_inner_symlink(source: FilesystemSource, root: Path) -> None:
    (root / "alias.jpg").symlink_to(root / "photo.jpg")

    fetched = await source.fetch("alias.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO_BYTES


async def test_fetch_through_relative_inner_symlink(source: FilesystemSource, root: Path) -> None:
    (root / "sub" / "up.jpg").symlink_to(Path("..") / "photo.jpg")

    fetched = await source.fetch("sub/up.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO_BYTES


async def test_fetch_root_given_as_symlink(tmp_path: Path, root: Path) -> None:
    linked_root = tmp_path / "linked-root"
    linked_root.symlink_to(root, target_is_directory=True)
    linked_source = FilesystemSource(source_settings("linked", linked_root))

    fetched = await linked_source.fetch("photo.jpg", max_bytes=MAX_BYTES)

    assert fetched.data == PHOTO_BYTES


async def test_fetch_absolute_path_is_not_found(source: FilesystemSource, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(b"root's own passwd")

    with pytest.raises(NotFoundError):
        await source.fetch("/etc/passwd", max_bytes=MAX_BYTES)


# --- FilesystemSource: not found -----------------------------------------------------------

NOT_FOUND_PATHS = [
    pytest.param("absent.jpg", id="missing file"),
    pytest.param("sub/absent.jpg", id="missing nested file"),
    pytest.param("absent-dir/photo.jpg", id="missing folder"),
    pytest.param("photo.jpg/inner.jpg", id="file used as folder"),
    pytest.param("sub", id="folder"),
    pytest.param("sub/", id="folder with slash"),
    pytest.param("empty-dir", id="empty folder"),
    pytest.param("", id="empty path"),
    pytest.param("/", id="slash only"),
    pytest.param("//", id="slashes only"),
    pytest.param("photo\x00.jpg", id="NUL inside"),
    pytest.param("photo.jpg\x00", id="NUL at end"),
    pytest.param("../outside/secret.jpg", id="parent escape"),
    pytest.param("sub/../../outside/secret.jpg", id="nested parent escape"),
    pytest.param("..", id="parent itself"),
    pytest.param("/../outside/secret.jpg", id="slash then parent"),
    pytest.param("/etc/passwd", id="absolute system file"),
    pytest.param("x" * 300, id="name over NAME_MAX"),
    pytest.param("/".join(["x" * 200] * 30), id="path over PATH_MAX"),
]


@pytest.mark.parametrize("path", NOT_FOUND_PATHS)
async def test_fetch_not_found(source: FilesystemSource, path: str) -> None:
    with pytest.raises(NotFoundError, match="no image at"):
        await source.fetch(path, max_bytes=MAX_BYTES)


async def test_fetch_symlink_to_outside_file(
    source: FilesystemSource, root: Path, outside: Path
) -> None:
    (root / "leak.jpg").symlink_to(outside / "secret.jpg")

    with pytest.raises(NotFoundError, match="no image at"):
        await source.fetch("leak.jpg", max_bytes=MAX_BYTES)


async def test_fetch_symlink_to_outside_folder(
    source: FilesystemSource, root: Path, outside: Path
) -> None:
    (root / "door").symlink_to(outside, target_is_directory=True)

    with pytest.raises(NotFoundError, match="no image at"):
        await source.fetch("door/secret.jpg", max_bytes=MAX_BYTES)


async def test_fetch_dangling_symlink(source: FilesystemSource, root: Path) -> None:
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")

    with pytest.raises(NotFoundError, match="no image at"):
        await source.fetch("dangling.jpg", max_bytes=MAX_BYTES)


async def test_fetch_symlink_loop(source: FilesystemSource, root: Path) -> None:
    (root / "loop-a.jpg").symlink_to(root / "loop-b.jpg")
    (root / "loop-b.jpg").symlink_to(root / "loop-a.jpg")

    with pytest.raises(NotFoundError, match="no image at"):
        await source.fetch("loop-a.jpg", max_bytes=MAX_BYTES)


async def test_fetch_fifo_not_found(source: FilesystemSource, root: Path) -> None:
    # Opening a FIFO for reading blocks until a writer appears, so a source that opened it
    # plainly would hang here until the test timeout.
    os.mkfifo(root / "pipe.jpg")

    with pytest.raises(NotFoundError, match="no image at"):
        await source.fetch("pipe.jpg", max_bytes=MAX_BYTES)


async def test_fetch_outside_error_hides_target(
    source: FilesystemSource, root: Path, outside: Path
) -> None:
    (root / "leak.jpg").symlink_to(outside / "secret.jpg")

    with pytest.raises(NotFoundError) as excinfo:
        await source.fetch("leak.jpg", max_bytes=MAX_BYTES)

    assert str(outside) not in excinfo.value.public_message


# --- decode_path ---------------------------------------------------------------------------

DECODED_PATHS = [
    pytest.param("/photo.jpg", "/photo.jpg", id="plain"),
    pytest.param("/%41.jpg", "/A.jpg", id="upper-case escape"),
    pytest.param("/%6a.jpg", "/j.jpg", id="lower-case hex"),
    pytest.param("/caf%C3%A9.jpg", "/caf\u00e9.jpg", id="two-byte UTF-8"),
    pytest.param("/%E2%82%AC.jpg", "/\u20ac.jpg", id="three-byte UTF-8"),
    pytest.param("/%F0%9F%93%B7.jpg", "/\U0001f4f7.jpg", id="four-byte UTF-8"),
    pytest.param("/a%20b.jpg", "/a b.jpg", id="space"),
    pytest.param("/a+b.jpg", "/a+b.jpg", id="plus stays"),
    pytest.param("/a%2Fb.jpg", "/a/b.jpg", id="encoded slash"),
    pytest.param("/%25.jpg", "/%.jpg", id="encoded percent"),
    pytest.param("/%2541.jpg", "/%41.jpg", id="decoded once only"),
    pytest.param("/caf\u00e9.jpg", "/caf\u00e9.jpg", id="raw non-ASCII"),
    pytest.param("", "", id="empty"),
]


@pytest.mark.parametrize(("raw_path", "expected"), DECODED_PATHS)
def test_decode_path_valid(raw_path: str, expected: str) -> None:
    assert decode_path(raw_path) == expected


BAD_ESCAPES = [
    pytest.param("/%zz.jpg", id="not hex"),
    pytest.param("/%4", id="one digit at end"),
    pytest.param("/%4.jpg", id="one digit"),
    pytest.param("/photo.jpg%", id="trailing percent"),
    pytest.param("/%", id="percent only"),
    pytest.param("/%%41", id="double percent"),
    pytest.param("/%G1.jpg", id="hex-like letter"),
]


@pytest.mark.parametrize("raw_path", BAD_ESCAPES)
def test_decode_path_bad_escape(raw_path: str) -> None:
    with pytest.raises(InvalidPathError, match="invalid percent-escape"):
        decode_path(raw_path)


BAD_UTF8 = [
    pytest.param("/%ff.jpg", id="0xff byte"),
    pytest.param("/%C3.jpg", id="truncated sequence"),
    pytest.param("/%C3%28.jpg", id="bad continuation"),
    pytest.param("/%C0%AF.jpg", id="overlong slash"),
    pytest.param("/%ED%A0%80.jpg", id="surrogate"),
    pytest.param("/%A9.jpg", id="lone continuation"),
]


@pytest.mark.parametrize("raw_path", BAD_UTF8)
def test_decode_path_invalid_utf8(raw_path: str) -> None:
    with pytest.raises(InvalidPathError, match="not valid UTF-8"):
        decode_path(raw_path)


def test_decode_path_error_is_400() -> None:
    with pytest.raises(InvalidPathError) as excinfo:
        decode_path("/%zz")

    assert excinfo.value.status == 400


# --- SourceRouter --------------------------------------------------------------------------


def source_settings(
    name: str, root: Path, prefix: str | None = None, hosts: tuple[str, ...] = ()
) -> SourceSettings:
    return SourceSettings(
        name=name, kind="filesystem", prefix=prefix, hosts=hosts, options=FilesystemOptions(root)
    )


@pytest.fixture
def router(root: Path) -> SourceRouter:
    """Sources at ``/web``, ``/web/large``, the empty prefix, and two routed by host."""
    return SourceRouter(
        (
            source_settings("web", root, prefix="/web"),
            source_settings("web-large", root, prefix="/web/large"),
            source_settings("rest", root, prefix=""),
            source_settings("cdn", root, hosts=("img.example.com",)),
            source_settings("cdn-thumbs", root, prefix="/thumbs", hosts=("thumbs.example.com",)),
            source_settings("loopback-v6", root, hosts=("[::1]",)),
        )
    )


ROUTES = [
    pytest.param(None, "/web/a.jpg", "web", "a.jpg", id="prefix"),
    pytest.param(None, "/web/dir/a.jpg", "web", "dir/a.jpg", id="prefix nested path"),
    pytest.param(None, "/web", "web", "", id="prefix exactly"),
    pytest.param(None, "/web/", "web", "", id="prefix with slash"),
    pytest.param(None, "/webcam/x.jpg", "rest", "webcam/x.jpg", id="segment boundary"),
    pytest.param(None, "/website", "rest", "website", id="prefix of a longer name"),
    pytest.param(None, "/web/large/a.jpg", "web-large", "a.jpg", id="longest prefix"),
    pytest.param(None, "/web/larger/a.jpg", "web", "larger/a.jpg", id="longer prefix partial"),
    pytest.param(None, "/other/a.jpg", "rest", "other/a.jpg", id="empty prefix"),
    pytest.param(None, "/", "rest", "", id="root path"),
    pytest.param("img.example.com", "/web/a.jpg", "cdn", "web/a.jpg", id="host wins"),
    pytest.param("img.example.com:3000", "/a.jpg", "cdn", "a.jpg", id="host with port"),
    pytest.param("IMG.Example.COM", "/a.jpg", "cdn", "a.jpg", id="host case-insensitive"),
    pytest.param("other.example.com", "/web/a.jpg", "web", "a.jpg", id="unknown host"),
    pytest.param("", "/web/a.jpg", "web", "a.jpg", id="empty host"),
    pytest.param("thumbs.example.com", "/thumbs/a.jpg", "cdn-thumbs", "a.jpg", id="host+prefix"),
    pytest.param("thumbs.example.com", "/web/a.jpg", "web", "a.jpg", id="host, other prefix"),
    pytest.param(None, "/thumbs/a.jpg", "rest", "thumbs/a.jpg", id="prefix without host"),
    pytest.param("[::1]", "/a.jpg", "loopback-v6", "a.jpg", id="ipv6 host"),
    pytest.param("[::1]:3000", "/a.jpg", "loopback-v6", "a.jpg", id="ipv6 host with port"),
]


@pytest.mark.parametrize(("host", "path", "name", "object_path"), ROUTES)
def test_router_resolves_source(
    router: SourceRouter, host: str | None, path: str, name: str, object_path: str
) -> None:
    route = router.resolve(host, path)

    assert route.settings.name == name
    assert route.path == object_path


def test_router_route_source_matches_settings(router: SourceRouter) -> None:
    route = router.resolve(None, "/web/a.jpg")

    assert route.source.name == route.settings.name


def test_router_host_wins_over_longer_prefix(root: Path) -> None:
    router = SourceRouter(
        (
            source_settings("deep", root, prefix="/a/b/c"),
            source_settings("by-host", root, hosts=("img.example.com",)),
        )
    )

    route = router.resolve("img.example.com", "/a/b/c/d.jpg")

    assert route.settings.name == "by-host"


NO_ROUTES = [
    pytest.param(None, "/b/x.jpg", id="no prefix matches"),
    pytest.param(None, "/ab/x.jpg", id="prefix not on segment boundary"),
    pytest.param("other.example.com", "/x.jpg", id="unknown host"),
    pytest.param(None, "/x.jpg", id="no host header"),
]


@pytest.mark.parametrize(("host", "path"), NO_ROUTES)
def test_router_no_match(root: Path, host: str | None, path: str) -> None:
    router = SourceRouter(
        (
            source_settings("a", root, prefix="/a"),
            source_settings("by-host", root, hosts=("img.example.com",)),
        )
    )

    with pytest.raises(NotFoundError, match="no source is routed at"):
        router.resolve(host, path)
