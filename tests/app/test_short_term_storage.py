"""ShortTermStorage: request directories, expiry, cleanup, failures and the index."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from app.errors import NotFound
from app.models.base import utcnow
from app.shortterm import Gone, ShortTermStorage, safe_file_name


@pytest.fixture
def sts(tmp_path) -> ShortTermStorage:
    return ShortTermStorage(tmp_path / "short_term", default_duration=60, maximum_duration=3600)


def test_lifecycle(sts):
    meta = sts.create(7, "a/b/../report.pdf", "application/pdf")
    assert meta.file_name == "report.pdf" and meta.duration == 60
    assert not sts.is_finalized(meta.request_id) and sts.error(meta.request_id) is None
    with sts.writing(meta.request_id) as partial:
        partial.write_bytes(b"%PDF")
    assert sts.is_finalized(meta.request_id)
    assert sts.target_path(meta.request_id).read_bytes() == b"%PDF"
    assert sts.load_for(meta.request_id, 7).request_id == meta.request_id
    with pytest.raises(NotFound):
        sts.load_for(meta.request_id, 8)


def test_a_failed_write_leaves_no_file(sts):
    meta = sts.create(1, "x", "text/plain")
    with pytest.raises(RuntimeError), sts.writing(meta.request_id) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("boom")
    assert not sts.is_finalized(meta.request_id)
    assert not sts.partial_path(meta.request_id).exists()
    sts.fail(meta.request_id, "boom")
    assert sts.error(meta.request_id) == "boom"


def test_expiry_counts_from_finalization_and_cleanup_removes(sts):
    meta = sts.create(1, "x", "text/plain", duration=60)
    later = utcnow() + dt.timedelta(seconds=120)
    # Unfinished: kept for the maximum duration, however short its own duration.
    assert sts.cleanup(now=later) == 0
    sts.finalize(meta.request_id)
    assert sts.cleanup(now=utcnow()) == 0
    with pytest.raises(Gone):
        sts.load_for(meta.request_id, 1, now=later)
    assert sts.cleanup(now=later) == 1
    assert not sts.directory(meta.request_id).exists()
    with pytest.raises(NotFound):
        sts.load_for(meta.request_id, 1)
    stale = sts.create(1, "y", "text/plain")
    assert sts.cleanup(now=utcnow() + dt.timedelta(seconds=3601)) == 1
    assert not sts.directory(stale.request_id).exists()


def test_durations_are_bounded(sts):
    from app.errors import RequestParameterInvalid

    with pytest.raises(RequestParameterInvalid):
        sts.create(1, "x", "text/plain", duration=3601)


def test_bad_ids_never_name_a_path(sts):
    for bad in ("..", "../etc", "a" * 31, "A" * 32, "/abs"):
        with pytest.raises(NotFound):
            sts.directory(bad)


def test_index_and_orphans(sts):
    meta = sts.create(1, "x", "text/plain")
    sts.remember("legacy-1-2-tgz-00", meta.request_id)
    assert sts.recall("legacy-1-2-tgz-00") == meta.request_id
    sts.forget("legacy-1-2-tgz-00", "f" * 32)  # names another request: kept
    assert sts.recall("legacy-1-2-tgz-00") == meta.request_id
    orphan = sts.root / ("e" * 32)
    orphan.mkdir()
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    sts.finalize(meta.request_id)
    assert sts.cleanup(now=utcnow() + dt.timedelta(seconds=61)) == 2
    assert sts.recall("legacy-1-2-tgz-00") is None
    assert not (sts.root / "_index" / "legacy-1-2-tgz-00").exists()


def test_safe_file_name():
    assert safe_file_name('..\\..\\evil".tgz') == "evil.tgz"
    assert safe_file_name("") == "download"


def test_beat_has_the_cleanup_and_it_runs(stack):
    from workers.beat import PERIODIC

    (periodic,) = [p for p in PERIODIC if p.name == "short_term_storage_cleanup"]
    assert periodic.interval == 300
    sts = ShortTermStorage.from_settings(stack.settings)
    meta = sts.create(1, "x", "text/plain", duration=1)
    sts.finalize(meta.request_id)
    time.sleep(1.1)
    assert periodic.run(stack.runtime) == 1


def test_abandoned_import_staging_is_removed(stack):
    from app.exports.importer import cleanup_staging

    root = stack.settings.resolved_data_dir / "imports"
    old, fresh = root / ("a" * 32), root / ("b" * 32)
    for path in (old, fresh):
        path.mkdir(parents=True)
        (path / "archive").write_bytes(b"x")
    stamp = time.time() - stack.settings.short_term_storage_maximum_duration - 10
    os.utime(old, (stamp, stamp))
    assert cleanup_staging(stack.settings) == 1
    assert not old.exists() and fresh.exists()


def test_openapi_lists_the_export_routes(stack):
    paths = stack.client().get("/api/openapi.json").json["paths"]
    for path in ("/api/short_term_storage/{storage_request_id}/ready", "/api/histories/{history_id}/prepare_store_download",
                 "/api/histories/{history_id}/contents/bulk", "/api/invocations/{invocation_id}/report.pdf"):
        assert path in paths, sorted(paths)
