"""Users, API keys and authentication."""

from __future__ import annotations


def test_version_needs_no_key(stack):
    response = stack.client(key=None).get("/api/version")
    assert response.status_code == 200
    assert response.json["version_major"] >= "22.01"


def test_bootstrap_key_creates_users_and_keys(stack):
    admin = stack.client()
    created = admin.post("/api/users", json={"username": "alice", "email": "alice@example.org", "password": "pw"})
    assert created.status_code == 200
    assert created.json["username"] == "alice"
    key = admin.post(f"/api/users/{created.json['id']}/api_key")
    assert key.status_code == 200 and isinstance(key.json, str) and len(key.json) >= 32
    me = stack.client(key.json).get("/api/users/current")
    assert me.json["email"] == "alice@example.org"
    assert me.json["is_admin"] is False


def test_new_key_retires_the_old_one(stack):
    first = stack.user_key("bob")
    me = stack.client(first).get("/api/users/current").json
    second = stack.client(first).post(f"/api/users/{me['id']}/api_key").json
    assert stack.client(first).get("/api/users/current").status_code == 401
    assert stack.client(second).get("/api/users/current").status_code == 200


def test_keys_are_stored_hashed(stack):
    import sqlalchemy as sa

    from app.models import ApiKey

    key = stack.user_key("carol")
    with stack.services.engine.connect() as conn:
        stored = conn.execute(sa.select(ApiKey.key_hash)).scalars().all()
    assert key not in stored and len(stored) == 1


def test_missing_and_wrong_keys(stack):
    assert stack.client(key=None).get("/api/histories").status_code == 403
    wrong = stack.client("not-a-key").get("/api/histories")
    assert wrong.status_code == 401 and wrong.json["err_code"] == 401001
    assert stack.client(key=None).get(f"/api/histories?key={stack.user_key('dan')}").status_code == 200


def test_only_admins_create_users(stack):
    key = stack.user_key("erin")
    refused = stack.client(key).post("/api/users", json={"username": "x", "email": "x@example.org"})
    assert refused.status_code == 403
    anonymous = stack.client(key=None).post("/api/users", json={"username": "y", "email": "y@example.org"})
    assert anonymous.status_code == 403


def test_duplicate_and_invalid_users(stack):
    admin = stack.client()
    stack.user_key("frank")
    duplicate = admin.post("/api/users", json={"username": "frank", "email": "frank@example.org"})
    assert duplicate.status_code == 409
    bad = admin.post("/api/users", json={"username": "../etc", "email": "nope"})
    assert bad.status_code == 400
    assert "username" in bad.json["err_msg"] and "email" in bad.json["err_msg"]


def test_other_users_are_invisible(stack):
    alice = stack.client(stack.user_key("alice"))
    bob = stack.client(stack.user_key("bob"))
    alice_id = alice.get("/api/users/current").json["id"]
    assert bob.get(f"/api/users/{alice_id}").status_code == 404
    assert bob.post(f"/api/users/{alice_id}/api_key").status_code == 404
