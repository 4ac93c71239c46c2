"""Users, tokens and dashboard sessions: stored hashed, checked the same way whatever
went wrong, created from the CLI without a prompt; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from dicom_node.cli.main import main as cli
from dicom_node.ops.accounts import (
    AccountRefused,
    add_user,
    check_password,
    close_session,
    create_token,
    disable_user,
    open_session,
    principal_for_token,
    revoke_token,
    session_principal,
    set_password,
)
from storage.database import Database
from storage.models import ApiToken, Role, User, WebSession

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_a_password_is_stored_as_an_argon2id_hash_and_checked(db: Database) -> None:
    with db.session() as session:
        add_user(session, "alice", Role.REVIEWER, PASSWORD, NOW)
    with db.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.name == "alice"))
        assert stored is not None and stored.startswith("$argon2id$")
        assert PASSWORD not in stored
        principal = check_password(session, "alice", PASSWORD)
        assert principal is not None and (principal.name, principal.role) == (
            "alice",
            Role.REVIEWER,
        )
        assert check_password(session, "alice", PASSWORD + "x") is None
        assert check_password(session, "nobody", PASSWORD) is None


def test_a_token_is_stored_as_its_sha256_and_names_its_user(db: Database) -> None:
    with db.session() as session:
        add_user(session, "bob", Role.VIEWER, None, NOW)
        token_id, token = create_token(session, "bob", "prometheus", NOW)
    with db.session() as session:
        row = session.get(ApiToken, token_id)
        assert row is not None
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        principal = principal_for_token(session, token, NOW)
        assert principal is not None and principal.name == "bob" and principal.role == Role.VIEWER
        altered = token[:-1] + ("B" if token.endswith("A") else "A")
        assert principal_for_token(session, altered, NOW) is None
        assert principal_for_token(session, "not-a-token", NOW) is None
        assert check_password(session, "bob", "") is None  # tokens only: no password works


def test_revoked_tokens_and_disabled_users_stop_working_at_once(db: Database) -> None:
    with db.session() as session:
        add_user(session, "carol", Role.ADMIN, PASSWORD, NOW)
        first_id, first = create_token(session, "carol", "", NOW)
        _, second = create_token(session, "carol", "", NOW)
        principal = check_password(session, "carol", PASSWORD)
        assert principal is not None
        secret, _csrf = open_session(session, principal, NOW, timedelta(hours=1))
    with db.session() as session:
        revoke_token(session, first_id, NOW)
    with db.session() as session:
        assert principal_for_token(session, first, NOW) is None
        assert principal_for_token(session, second, NOW) is not None
        disable_user(session, "carol", NOW)
    with db.session() as session:
        assert principal_for_token(session, second, NOW) is None
        assert check_password(session, "carol", PASSWORD) is None
        assert session_principal(session, secret, NOW) is None


def test_a_session_expires_changes_password_signs_out_and_logout_ends_it(db: Database) -> None:
    with db.session() as session:
        user = add_user(session, "dave", Role.REVIEWER, PASSWORD, NOW)
        principal = check_password(session, "dave", PASSWORD)
        assert principal is not None and principal.user_id == user.id
        secret, csrf = open_session(session, principal, NOW, timedelta(hours=1))
        other, _ = open_session(session, principal, NOW, timedelta(hours=1))
    with db.session() as session:
        found = session_principal(session, secret, NOW + timedelta(minutes=59))
        assert found is not None and found[1] == csrf
        assert session_principal(session, secret, NOW + timedelta(hours=1)) is None
        stored = session.scalars(select(WebSession.secret_hash)).all()
        assert secret not in stored and hashlib.sha256(secret.encode()).hexdigest() in stored
        close_session(session, secret)
    with db.session() as session:
        assert session_principal(session, secret, NOW) is None
        assert session_principal(session, other, NOW) is not None
        set_password(session, "dave", PASSWORD + " again")
    with db.session() as session:
        assert session_principal(session, other, NOW) is None
        assert check_password(session, "dave", PASSWORD) is None


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("with space", PASSWORD, "user name"),
        ("erin", "short", "password too short"),
        ("alice", PASSWORD, "exists already"),
    ],
)
def test_bad_accounts_are_refused_with_the_reason(
    db: Database, name: str, password: str, message: str
) -> None:
    with db.session() as session:
        add_user(session, "alice", Role.VIEWER, PASSWORD, NOW)
    with db.session() as session, pytest.raises(AccountRefused, match=message):
        add_user(session, name, Role.VIEWER, password, NOW)


def test_roles_rank_viewer_below_reviewer_below_admin(db: Database) -> None:
    with db.session() as session:
        for name, role in (("v", Role.VIEWER), ("r", Role.REVIEWER), ("a", Role.ADMIN)):
            add_user(session, name, role, PASSWORD, NOW)
        may = {
            name: [
                role
                for role in Role
                if (p := check_password(session, name, PASSWORD)) is not None and p.may(role)
            ]
            for name in ("v", "r", "a")
        }
    assert may == {
        "v": [Role.VIEWER],
        "r": [Role.VIEWER, Role.REVIEWER],
        "a": [Role.VIEWER, Role.REVIEWER, Role.ADMIN],
    }


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"storage": {"database_url": "sqlite:///node.db", "spool_dir": "spool"}})
    )
    return path


def test_users_add_reads_the_password_from_stdin_and_tokens_create_prints_it_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert (
        cli(
            [
                "users",
                "add",
                "rita",
                "--role",
                "reviewer",
                "--password-stdin",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    assert PASSWORD not in capsys.readouterr().out
    assert cli(["tokens", "create", "rita", "--config", str(config)]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    with db.session() as session:
        principal = principal_for_token(session, token, NOW)
        assert principal is not None and principal.name == "rita"
        assert check_password(session, "rita", PASSWORD) is not None
    db.dispose()
    assert cli(["users", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.split("\t")[:4] == ["rita", "reviewer", "active", "1 token(s)"]


def test_the_cli_refuses_an_empty_stdin_and_an_unknown_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exit_:
        cli(
            ["users", "add", "sam", "--role", "viewer", "--password-stdin", "--config", str(config)]
        )
    assert exit_.value.code == 2
    assert "standard input held no password" in capsys.readouterr().err
    assert cli(["tokens", "create", "nobody", "--config", str(config)]) == 1
    assert capsys.readouterr().err.strip() == "dicom-node: no active user 'nobody'"
