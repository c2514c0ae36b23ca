"""`agentbox update URL`: a bundle fetched from a loopback HTTP server of the test. A good one is
installed exactly as from a file; one cut short (with or without a Content-Length), a 404 and
an unreachable server are refused with nothing changed on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentbox.update import bundle, flow, record, request
from tests.conftest import free_port
from tests.fakes import BundleServer, FakeProvider, openai_stream
from tests.test_update_bundle import Box
from tests.test_update_kit import build_bundle, make_key
from tests.test_update_rollout import Rig


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("url")
    key, pub = make_key(work / "keys")
    return {
        "pub": pub,
        "0.1.0": build_bundle(work / "a", key, "0.1.0"),
        "0.2.0": build_bundle(work / "b", key, "0.2.0"),
    }


@pytest.fixture
def server() -> Iterator[BundleServer]:
    s = BundleServer()
    yield s
    s.close()


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("cut", "the download was cut short"),
        ("cut-nolength", "truncated"),
        ("404", "HTTP 404"),
        ("unreachable", "unreachable"),
    ],
)
def test_a_download_that_fails_is_refused_with_nothing_changed(
    tmp_path: Path, made: dict[str, Path], server: BundleServer, mode: str, said: str
) -> None:
    box = Box(tmp_path, made["pub"])
    url = server.add(made["0.2.0"])
    if mode == "unreachable":
        url = f"http://127.0.0.1:{free_port()}/agentbox.bundle"
    server.mode = mode
    before = box.disk()
    proc = box.cli("update", url, "--json")
    assert proc.returncode == 65, (proc.stdout, proc.stderr)
    out = json.loads(proc.stdout)
    assert out["state"] == "refused" and said in out["error"], out
    assert "update: downloading http://127.0.0.1:" in proc.stderr
    assert box.disk() == before  # no temporary file left, no record, no release


def test_a_url_in_the_request_never_shows_its_password(
    tmp_path: Path, made: dict[str, Path], server: BundleServer
) -> None:
    box = Box(tmp_path, made["pub"])
    server.add(made["0.2.0"])
    server.mode = "404"
    url = f"http://op:hunter2@127.0.0.1:{server.port}/{made['0.2.0'].name}?token=s3cret"
    proc = box.cli("update", url, "--json")
    assert proc.returncode == 65
    assert "hunter2" not in proc.stdout + proc.stderr and "s3cret" not in proc.stdout + proc.stderr


def test_a_good_download_is_installed_and_serves(
    short_tmp: Path, made: dict[str, Path], server: BundleServer
) -> None:
    fake = FakeProvider(default=openai_stream("done"))
    rig = Rig(short_tmp, made["pub"], fake)
    try:
        first = flow.update_url(server.add(made["0.1.0"]), None, rig.box)
        assert first.state == "succeeded", (first, rig.progress, rig.service.log()[-3000:])
        rig.submit(["before"])
        url = server.add(made["0.2.0"])
        sha = made["0.2.0"].with_name(made["0.2.0"].name + ".sha256").read_text().split()[0]
        outcome = flow.update_url(url, sha, rig.box)
        assert outcome.state == "succeeded" and outcome.code == flow.OK, (outcome, rig.progress)
        assert rig.cli("status")["version"] == "0.2.0"
        assert any(line.startswith("downloaded ") for line in rig.progress), rig.progress
        assert not list(rig.root.glob(".download-*")), "the downloaded file was left behind"
        last = record.read(rig.root)
        assert last is not None and last["state"] == "succeeded"
        rig.all_succeeded(["before"])
    finally:
        rig.service.close()
        fake.close()
    assert "Traceback" not in rig.service.log()


def test_a_requested_downgrade_goes_in_only_with_allow_downgrade(
    short_tmp: Path, made: dict[str, Path], server: BundleServer
) -> None:
    """What agentbox-update.service runs for a spooled request: the flag travels with it."""
    fake = FakeProvider(default=openai_stream("done"))
    rig = Rig(short_tmp, made["pub"], fake)
    try:
        for v in ("0.1.0", "0.2.0"):
            done = rig.update(made[v])
            assert done.state == "succeeded", (done, rig.progress)
        url, sha = server.add(made["0.1.0"]), bundle.sha256_file(made["0.1.0"])
        spool = request.spool(rig.state, request.parse({"url": url, "sha256": sha}))
        refused = flow.run_request(spool, rig.box)
        assert refused is not None and refused.code == flow.REFUSED, refused
        assert "release 0.1.0 is older than the current 0.2.0" in str(refused.error)
        last = record.read(rig.root)
        assert last is not None and last["state"] == "failed", last
        assert str(last["error"]).startswith("refused, nothing changed: release 0.1.0 is older")
        asked = request.parse({"url": url, "sha256": sha, "allow_downgrade": True})
        down = flow.run_request(request.spool(rig.state, asked), rig.box)
        assert down is not None and down.state == "succeeded", (down, rig.progress)
        assert (down.old, down.new) == ("0.2.0", "0.1.0")
        assert rig.cli("status")["version"] == "0.1.0"
    finally:
        rig.service.close()
        fake.close()
