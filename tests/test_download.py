"""Tests of netdissect.data.download against a local HTTP server serving a tiny generated Broden zip.

The server (127.0.0.1, a free port) honours Range requests, can be told to ignore them, to cut
the connection after some bytes, and records the headers of every request.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import socket
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from netdissect.data import download as dl
from netdissect.data.download import (
    ArchiveInfo,
    DownloadError,
    DownloadInterrupted,
    broden_url,
    check_broden_folder,
    download_broden,
    safe_extract,
)

CATEGORIES = ["object", "scene", "color"]  # category.csv order; index.csv uses another order.


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch):
    """Keep the tests off any proxy and any user-set mirror."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(dl.URL_ENV_VAR, raising=False)


# ----------------------------------------------------------------------------------------------
# A tiny Broden folder, zipped


def _write_csv(path: Path, rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def make_broden(root: Path) -> Path:
    """Write a 3-image Broden folder (8x8 JPEGs, 4x4 label PNGs) at ``root``."""
    images = root / "images" / "toy"
    images.mkdir(parents=True)
    index = [["image", "split", "ih", "iw", "sh", "sw", "color", "object", "scene"]]
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(images / f"{i}.jpg")
        for cat, number in (("color", 1), ("object", 2)):
            plane = Image.new("RGB", (4, 4), (0, 0, 0))
            plane.putpixel((i, i), (number, 0, 0))
            plane.save(images / f"{i}_{cat}.png")
        index.append([f"toy/{i}.jpg", "train", 8, 8, 4, 4,
                      f"toy/{i}_color.png", f"toy/{i}_object.png", "3"])
    _write_csv(root / "index.csv", index)
    _write_csv(root / "category.csv", [["name", "first", "last", "count", "frequency"],
                                       ["object", 2, 2, 1, 3], ["scene", 3, 3, 1, 3],
                                       ["color", 1, 1, 1, 3]])
    _write_csv(root / "label.csv", [["number", "name", "category", "frequency", "coverage", "syns"],
                                    [1, "red-c", "color(3)", 3, 0.1, ""],
                                    [2, "dog", "object(3)", 3, 0.1, ""],
                                    [3, "beach-s", "scene(3)", 3, 3.0, ""]])
    for code, (cat, number, name) in enumerate(
        [("color", 1, "red-c"), ("object", 2, "dog"), ("scene", 3, "beach-s")]
    ):
        _write_csv(root / f"c_{cat}.csv", [["code", "number", "name", "frequency", "coverage"],
                                           [1, number, name, 3, 0.1]])
    return root


def zip_folder(folder: Path, top: str | None = "broden1_224", extra: dict[str, bytes] | None = None,
               symlinks: dict[str, str] | None = None) -> bytes:
    """Zip ``folder`` under ``top/`` (or at the archive top), adding raw or symlink entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        prefix = f"{top}/" if top else ""
        if top:
            zf.writestr(prefix, b"")
        for path in sorted(folder.rglob("*")):
            arcname = prefix + path.relative_to(folder).as_posix()
            if path.is_dir():
                zf.writestr(arcname + "/", b"")
            else:
                zf.write(path, arcname)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def broden_zip(tmp_path_factory) -> bytes:
    return zip_folder(make_broden(tmp_path_factory.mktemp("src") / "broden1_224"))


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ----------------------------------------------------------------------------------------------
# Full downloads


def test_full_download_writes_manifest_and_second_call_is_immediate(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    dest = tmp_path / "dataset"
    folder = download_broden("224", dest, url=server.base, progress=False)

    assert folder == dest / "broden1_224"
    assert (folder / "images" / "toy" / "2_object.png").is_file()
    check_broden_folder(folder)
    manifest = json.loads((dest / "broden1_224.manifest.json").read_text())
    assert manifest["sha256"] == _sha(broden_zip)
    assert manifest["size"] == len(broden_zip)
    assert manifest["url"] == server.base + "broden1_224.zip"
    assert manifest["verified_against_table"] is False
    assert manifest["downloaded"][:4].isdigit()
    assert _files_under(dest) == {"broden1_224.manifest.json"} | {
        "broden1_224/" + p for p in _files_under(folder)
    } | {"broden1_224"}  # No .zip, .part or staging folder left behind.
    assert len(server.requests) == 1 and "range" not in server.requests[0]

    assert download_broden("224", dest, url=server.base, progress=False) == folder
    assert len(server.requests) == 1


def test_known_hash_and_size_verified_full_url_and_kept_archive(server, broden_zip, tmp_path):
    server.files["/mirror/b.zip"] = broden_zip
    known = {"224": ArchiveInfo("broden1_224.zip", len(broden_zip), _sha(broden_zip))}
    folder = download_broden("224", tmp_path, url=server.base + "mirror/b.zip", progress=False,
                             known=known, keep_archive=True)
    assert (folder / "index.csv").is_file()
    assert (tmp_path / "broden1_224.zip").read_bytes() == broden_zip
    manifest = json.loads((tmp_path / "broden1_224.manifest.json").read_text())
    assert manifest["verified_against_table"] is True
    assert manifest["url"] == server.base + "mirror/b.zip"


def test_archive_without_top_folder(server, tmp_path):
    data = zip_folder(make_broden(tmp_path / "src"), top=None)
    server.files["/broden1_227.zip"] = data
    folder = download_broden("227", tmp_path / "d", url=server.base.rstrip("/"), progress=False)
    assert folder == tmp_path / "d" / "broden1_227"
    check_broden_folder(folder)


def test_env_var_gives_the_base_url(server, broden_zip, tmp_path, monkeypatch):
    server.files["/m/broden1_224.zip"] = broden_zip
    monkeypatch.setenv(dl.URL_ENV_VAR, server.base + "m/")
    assert (download_broden(dest=tmp_path, progress=False) / "index.csv").is_file()


def test_broden_url_forms(monkeypatch):
    assert broden_url("broden1_224.zip") == dl.DEFAULT_BASE_URL + "broden1_224.zip"
    assert broden_url("a.zip", "http://h/x/") == "http://h/x/a.zip"
    assert broden_url("a.zip", "http://h/x") == "http://h/x/a.zip"
    assert broden_url("a.zip", "http://h/y/other.ZIP") == "http://h/y/other.ZIP"
    monkeypatch.setenv(dl.URL_ENV_VAR, "http://env/")
    assert broden_url("a.zip") == "http://env/a.zip"
    assert broden_url("a.zip", "http://arg/") == "http://arg/a.zip"


# ----------------------------------------------------------------------------------------------
# Interruption and resuming


def test_interrupted_download_resumes_with_range(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    half = len(broden_zip) // 2
    server.cut_after = half
    with pytest.raises(DownloadInterrupted, match="resume"):
        download_broden("224", tmp_path, url=server.base, progress=False, retries=0)
    part = tmp_path / "broden1_224.zip.part"
    assert part.stat().st_size == half
    assert not (tmp_path / "broden1_224").exists()

    folder = download_broden("224", tmp_path, url=server.base, progress=False, retries=0)
    assert len(server.requests) == 2
    assert server.requests[1]["range"] == f"bytes={half}-"
    assert json.loads((tmp_path / "broden1_224.manifest.json").read_text())["sha256"] == _sha(broden_zip)
    check_broden_folder(folder)
    assert not part.exists()


def test_interruption_is_retried_within_one_call(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    server.cut_after = 1000
    known = {"224": ArchiveInfo("broden1_224.zip", None, _sha(broden_zip))}
    download_broden("224", tmp_path, url=server.base, progress=False, known=known)
    assert [r.get("range") for r in server.requests] == [None, "bytes=1000-"]


def test_server_ignoring_range_restarts_cleanly(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    server.ignore_range = True
    (tmp_path / "broden1_224.zip.part").write_bytes(b"garbage" * 100)
    known = {"224": ArchiveInfo("broden1_224.zip", None, _sha(broden_zip))}
    folder = download_broden("224", tmp_path, url=server.base, progress=False, known=known)
    assert server.requests[0]["range"] == "bytes=700-"
    check_broden_folder(folder)


def test_complete_part_answered_416_is_used(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    (tmp_path / "broden1_224.zip.part").write_bytes(broden_zip)
    folder = download_broden("224", tmp_path, url=server.base, progress=False)
    assert server.requests[0]["range"] == f"bytes={len(broden_zip)}-"
    check_broden_folder(folder)


def test_part_longer_than_file_starts_over(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    (tmp_path / "broden1_224.zip.part").write_bytes(broden_zip + b"junk")
    download_broden("224", tmp_path, url=server.base, progress=False)
    assert [r.get("range") for r in server.requests] == [f"bytes={len(broden_zip) + 4}-", None]


# ----------------------------------------------------------------------------------------------
# Refusals


def test_wrong_sha256_is_refused_and_deleted(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    known = {"224": ArchiveInfo("broden1_224.zip", None, "0" * 64)}
    with pytest.raises(DownloadError, match="sha256 is [0-9a-f]{64}, expected 0{64}"):
        download_broden("224", tmp_path, url=server.base, progress=False, known=known)
    assert _files_under(tmp_path) == set()


def test_wrong_size_is_refused_before_downloading(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    known = {"224": ArchiveInfo("broden1_224.zip", len(broden_zip) + 1, None)}
    with pytest.raises(DownloadError, match="refusing a different file"):
        download_broden("224", tmp_path, url=server.base, progress=False, known=known)
    assert not (tmp_path / "broden1_224").exists()


def test_not_a_zip_is_refused(server, tmp_path):
    server.files["/broden1_224.zip"] = b"<html>mirror moved</html>"
    with pytest.raises(DownloadError, match="not a zip archive"):
        download_broden("224", tmp_path, url=server.base, progress=False)
    assert _files_under(tmp_path) == set()


def test_dot_dot_entry_refused_and_nothing_written_outside(server, tmp_path):
    data = zip_folder(make_broden(tmp_path / "src" / "broden1_224"),
                      extra={"broden1_224/../../evil": b"owned"})
    server.files["/broden1_224.zip"] = data
    outer = tmp_path / "outer"
    dest = outer / "inner" / "dataset"
    with pytest.raises(DownloadError, match=r"'\.\.' component"):
        download_broden("224", dest, url=server.base, progress=False)
    assert _files_under(outer) == {"inner", "inner/dataset"}


def test_symlink_entry_refused(server, tmp_path):
    data = zip_folder(make_broden(tmp_path / "src"),
                      symlinks={"broden1_224/images/link.jpg": "/etc/passwd"})
    server.files["/broden1_224.zip"] = data
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match="symbolic link"):
        download_broden("224", dest, url=server.base, progress=False)
    assert _files_under(dest) == set()


@pytest.mark.parametrize("name, reason", [
    ("/abs/evil", "absolute path"),
    ("\\abs\\evil", "absolute path"),
    ("C:/evil", "drive letter"),
    ("C:evil", "drive letter"),
    ("broden1_224\\..\\..\\evil", r"'\.\.' component"),
])
def test_safe_extract_refuses_unsafe_names_before_writing(tmp_path, name, reason):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_folder(make_broden(tmp_path / "src"), extra={name: b"x"}))
    with pytest.raises(DownloadError, match=reason):
        safe_extract(archive, tmp_path / "out" / "broden1_224")
    assert not (tmp_path / "out").exists() or _files_under(tmp_path / "out") == set()


def test_archive_that_is_not_broden_is_refused(server, tmp_path):
    src = make_broden(tmp_path / "src")
    (src / "c_scene.csv").unlink()
    server.files["/broden1_224.zip"] = zip_folder(src)
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match=r"c_scene\.csv: missing"):
        download_broden("224", dest, url=server.base, progress=False)
    assert _files_under(dest) == set()


def test_check_broden_folder_names_missing_image(tmp_path):
    folder = make_broden(tmp_path / "b")
    (folder / "images" / "toy" / "1_object.png").unlink()
    with pytest.raises(DownloadError, match=r"1 file\(s\) named in .*index\.csv are missing, e\.g\. .*images/toy/1_object\.png"):
        check_broden_folder(folder)


def test_check_broden_folder_names_missing_column(tmp_path):
    folder = make_broden(tmp_path / "b")
    rows = list(csv.reader(open(folder / "index.csv")))
    _write_csv(folder / "index.csv", [r[:-1] for r in rows])  # Drop the scene column.
    with pytest.raises(DownloadError, match=r"index\.csv: no column for category scene"):
        check_broden_folder(folder)


def test_existing_broken_folder_is_left_alone(server, broden_zip, tmp_path):
    server.files["/broden1_224.zip"] = broden_zip
    (tmp_path / "broden1_224").mkdir()
    (tmp_path / "broden1_224" / "mine.txt").write_text("keep")
    with pytest.raises(DownloadError, match="delete it"):
        download_broden("224", tmp_path, url=server.base, progress=False)
    assert (tmp_path / "broden1_224" / "mine.txt").read_text() == "keep"
    assert server.requests == []


# ----------------------------------------------------------------------------------------------
# Network errors


def test_unreachable_host_names_url_and_mirror_options(tmp_path):
    base = _closed_port_url()
    with pytest.raises(DownloadError) as info:
        download_broden("224", tmp_path, url=base, progress=False, timeout=5)
    message = str(info.value)
    assert f"could not reach {base}broden1_224.zip" in message
    assert "--url" in message and dl.URL_ENV_VAR in message


def test_http_404_names_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404 .* for http://127\.0\.0\.1:\d+/broden1_384\.zip"):
        download_broden("384", tmp_path, url=server.base, progress=False)


def test_unknown_variant(tmp_path):
    with pytest.raises(DownloadError, match="unknown Broden variant '512'"):
        download_broden("512", tmp_path)


# ----------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    from netdissect.cli.main import build_parser

    return build_parser()


def test_cli_handler_downloads(server, broden_zip, tmp_path, capsys):
    server.files["/broden1_224.zip"] = broden_zip
    args = _parser().parse_args(
        ["download", "broden", "--dest", str(tmp_path), "--url", server.base, "--quiet"]
    )
    assert args.func.__name__ == "run_download" and args.variant == "224"
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "broden1_224")


def test_cli_handler_unreachable_exits_2_without_traceback(tmp_path, capsys):
    from netdissect.cli import main

    assert main(["download", "broden", "--variant", "227", "--dest", str(tmp_path), "--url",
                 _closed_port_url(), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netdissect download: error: could not reach http://127.0.0.1:")
    assert "broden1_227.zip" in err and "Traceback" not in err


def test_cli_rejects_unknown_variant():
    with pytest.raises(SystemExit):
        _parser().parse_args(["download", "broden", "--variant", "100"])


def test_download_verify_and_dissect_a_places365_checkpoint_by_model_name(server, broden_zip, tmp_path, capsys):
    """The user's path of issue 5: download Broden from a mirror, then dissect a published-style
    Places365 checkpoint (state dict under 'state_dict', 'module.' prefixes) by model name."""
    import json

    import torch
    import torchvision

    from netdissect.cli import main

    server.files["/broden1_224.zip"] = broden_zip
    assert main(["download", "broden", "--dest", str(tmp_path / "d"), "--url", server.base, "--quiet"]) == 0
    dataset = tmp_path / "d" / "broden1_224"
    manifest = json.loads((tmp_path / "d" / "broden1_224.manifest.json").read_text())
    assert manifest["sha256"] == _sha(broden_zip)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=365)
    checkpoint = tmp_path / "resnet18_places365.pth.tar"
    torch.save({"epoch": 90, "arch": "resnet18",
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["dissect", "--dataset", str(dataset), "--model", "resnet18", "--weights", str(checkpoint),
                 "--layers", "layer4", "--workers", "0", "--quantile", "0.05", "--no-report",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "layer4" / "summary.json").read_text())
    assert summary["model"]["preset"] == "places365"
    assert summary["settings"]["mean"] == pytest.approx([0.488981, 0.465450, 0.429564])
    assert summary["model"]["weights_fingerprint"] == _sha(checkpoint.read_bytes())
    assert summary["shape"] == [512, 7, 7] and summary["dataset"]["images_processed"] == 3
