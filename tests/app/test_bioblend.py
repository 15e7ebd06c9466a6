"""BioBlend 1.9, the standard Galaxy client, against Nebula served over real HTTP.

The app runs in a werkzeug server thread on the test's SQLite database; uploads run on
the stub broker when the test drains it.
"""

from __future__ import annotations

import threading
import time

import pytest
from werkzeug.serving import make_server

bioblend = pytest.importorskip("bioblend")
from bioblend.galaxy import GalaxyInstance  # noqa: E402

from tests.app.conftest import ADMIN_KEY  # noqa: E402


@pytest.fixture
def served(stack):
    """The stack's app on a free localhost port."""
    server = make_server("127.0.0.1", 0, stack.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _drain_until(stack, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.drain()
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_bioblend_users_histories_uploads(stack, served, tmp_path):
    admin = GalaxyInstance(served, key=ADMIN_KEY)
    user = admin.users.create_local_user("alice", "alice@example.org", "secret-password")
    key = admin.users.create_user_apikey(user["id"])
    gi = GalaxyInstance(served, key=key)
    assert gi.users.get_current_user()["username"] == "alice"

    history = gi.histories.create_history("bioblend")
    pasted = gi.tools.paste_content("x y z\r\n1 2 3", history["id"], file_name="pasted.txt", space_to_tab=True)
    path = tmp_path / "upload.txt"
    path.write_bytes(b"line one\nline two\n")
    uploaded = gi.tools.upload_file(str(path), history["id"])
    ids = [pasted["outputs"][0]["id"], uploaded["outputs"][0]["id"]]

    _drain_until(stack, lambda: all(gi.datasets.show_dataset(i)["state"] == "ok" for i in ids))
    assert gi.datasets.download_dataset(ids[0]) == b"x\ty\tz\n1\t2\t3\n"
    target = gi.datasets.download_dataset(ids[1], file_path=str(tmp_path / "out.txt"), use_default_filename=False)
    assert open(target, "rb").read() == b"line one\nline two\n"
    contents = gi.histories.show_history(history["id"], contents=True)
    assert [c["hid"] for c in contents] == [1, 2]
    assert gi.histories.show_history(history["id"])["state"] == "ok"
    gi.histories.update_history(history["id"], name="renamed")
    assert gi.histories.get_histories(name="renamed")[0]["id"] == history["id"]
    gi.histories.delete_history(history["id"], purge=True)
    assert gi.histories.show_history(history["id"])["purged"] is True
