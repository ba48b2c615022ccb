"""Keys, subjects and their errors: master key, key store, sealed payloads, forget."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from snaptail import (
    Agent,
    AgentForgotten,
    AgentStore,
    DamagedLog,
    KeysRequired,
    MasterKeyError,
    SubjectTooLate,
)
from snaptail.cli import app
from snaptail.privacy import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    Erasure,
    SQLKeyStore,
    is_sealed,
    new_master_key,
    on_forget,
    remove_listener,
)
from snaptail.projections import AgentStats, ProjectionWorker

MASTER = os.urandom(32)


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path}/events.db", f"sqlite:///{tmp_path}/keys.db"


def test_master_key_missing_or_wrong_fails_at_start(
    paths: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, keys = paths
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)
    with pytest.raises(MasterKeyError, match=r"no master key: set \$SNAPTAIL_MASTER_KEY"):
        AgentStore(db, keys=keys)
    assert not (tmp_path / "events.db").exists()  # failed before the database opened
    monkeypatch.setenv(MASTER_KEY_ENV, "not a key")
    with pytest.raises(MasterKeyError, match="not 32 bytes in base64 or hex"):
        AgentStore(db, keys=keys)
    first = new_master_key()
    monkeypatch.setenv(MASTER_KEY_ENV, first)
    AgentStore(db, keys=keys).close()  # creates the key store with this master key
    monkeypatch.setenv(MASTER_KEY_ENV, new_master_key())
    with pytest.raises(MasterKeyError, match="not the one this key store was made with"):
        AgentStore(db, keys=keys)
    monkeypatch.delenv(MASTER_KEY_ENV)
    key_file = tmp_path / "master.key"
    key_file.write_bytes(base64.b64decode(first))  # 32 raw bytes
    monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(key_file))
    AgentStore(db, keys=keys).close()
    monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(tmp_path / "missing.key"))
    with pytest.raises(MasterKeyError, match="cannot read"):
        AgentStore(db, keys=keys)


def test_keys_from_the_environment(paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    db, keys = paths
    monkeypatch.setenv("SNAPTAIL_KEYS_URL", keys)
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER.hex())
    with AgentStore(db) as store:
        assert store.keys is not None and store.keys.url == keys


def test_subjects_need_a_key_store_and_sealed_data_needs_one_to_read(
    paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, keys = paths
    monkeypatch.delenv("SNAPTAIL_KEYS_URL", raising=False)
    agent = Agent("a")
    with AgentStore(db) as plain, pytest.raises(KeysRequired, match="subjects need a key"):
        plain.add_subject(agent, "user-1")
    with AgentStore(db, keys=keys, master_key=MASTER, snapshot_every=2) as store:
        store.add_subject(agent, "user-1")
        agent.set_system_prompt("secret")
        store.save(agent)
    with AgentStore(db) as plain:
        with pytest.raises(KeysRequired, match="its stored data is encrypted"):
            plain.get(agent.id)
        with pytest.raises(KeysRequired):
            list(plain.history(agent.id))
        # The snapshot it could not open is left in place for a store with keys.
        assert plain.recorder.select_for_load(agent.id, recent=0).snapshot is not None


def test_a_subject_cannot_be_added_after_plaintext_events(paths: tuple[str, str]) -> None:
    db, keys = paths
    with AgentStore(db, keys=keys, master_key=MASTER) as store:
        agent = Agent("a")
        store.save(agent)
        with pytest.raises(SubjectTooLate, match="already has 1 unencrypted stored event"):
            store.add_subject(agent, "user-1")
        assert store.keys is not None and store.keys.subjects_of(agent.id) == ()
        assert not is_sealed(store.recorder.select_page(agent.id)[0].state)


def test_a_second_subject_can_join_and_forgetting_either_erases(paths: tuple[str, str]) -> None:
    db, keys = paths
    with AgentStore(db, keys=keys, master_key=MASTER) as store:
        agent = Agent("a")
        refs = store.add_subject(agent, "user-1")
        store.save(agent)
        refs = store.add_subject(agent.id, "user-2", "user-1")  # after saves: same data key
        assert len(refs) == 2 and "user" not in "".join(refs)
        agent.set_system_prompt("more")
        store.save(agent)
        assert store.get(agent.id).state.system_prompt == "more"
        other = Agent("b")
        store.add_subject(other, "user-1")
        store.save(other)
        erasure = store.forget("user-2")
        assert erasure is not None and erasure.agent_ids == (str(agent.id),)
        assert erasure.events == 2
        with pytest.raises(AgentForgotten):
            store.get(agent.id)
        assert store.get(other.id).name == "b"  # user-1's other agent is untouched
        with pytest.raises(AgentForgotten):
            store.add_subject(agent, "user-3")


def test_tampered_or_moved_ciphertext_is_refused(paths: tuple[str, str]) -> None:
    db, keys = paths
    with AgentStore(db, keys=keys, master_key=MASTER) as store:
        a, b = Agent("a"), Agent("b")
        store.add_subject(a, "u")
        store.add_subject(b, "u")
        store.save(a, b)
        cipher = store.mapper.payload_cipher
        assert cipher is not None
        sealed = store.recorder.select_page(a.id)[0].state
        with pytest.raises(DamagedLog, match="does not authenticate"):
            cipher.open_event(b.id, 1, sealed)  # a's row read as b's
        with pytest.raises(DamagedLog, match="does not authenticate"):
            cipher.open_event(a.id, 2, sealed)  # at another version
        flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
        with pytest.raises(DamagedLog, match="does not authenticate"):
            cipher.open_event(a.id, 1, flipped)
        assert cipher.open_event(a.id, 1, sealed)[:1] != b"\xc1"


def test_a_tail_opened_at_once_refuses_what_a_row_at_a_time_refuses(
    paths: tuple[str, str],
) -> None:
    db, keys = paths
    with AgentStore(db, keys=keys, master_key=MASTER) as store:
        a, b = Agent("a"), Agent("b")
        store.add_subject(a, "u")
        store.add_subject(b, "u")
        for i in range(4):
            a.set_system_prompt(f"p{i}")
        store.save(a, b)
        cipher = store.mapper.payload_cipher
        assert cipher is not None
        rows = [(r.originator_version, r.topic, r.state) for r in store.read_rows(a.id)]
        opened = cipher.open_rows(a.id, rows)
        assert opened == [(v, t, cipher.open_event(a.id, v, d)) for v, t, d in rows]
        assert all(not is_sealed(d) for _, _, d in opened)
        v, t, d = rows[2]
        for bad, why in (
            (d[:-1] + bytes([d[-1] ^ 1]), "does not authenticate"),  # altered
            (rows[1][2], "does not authenticate"),  # another version's row
            (store.read_rows(b.id)[0].state, "does not authenticate"),  # another agent's
            (d[:1] + b"\x02" + d[2:], "cut short or unknown"),  # an unknown format
            (d[:20], "cut short or unknown"),
        ):
            tail = [*rows[:2], (v, t, bad), *rows[3:]]
            with pytest.raises(DamagedLog, match=why) as raised:
                cipher.open_rows(a.id, tail)
            assert raised.value.version == v
        plain = [(v, t, cipher.open_event(a.id, v, d)), (v + 1, t, b"")]
        assert cipher.open_rows(a.id, plain) == plain  # plain rows pass as they are
    # A load reads its tail that way: an altered row is refused, naming its version.
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE stored_events SET state=? WHERE originator_id=? AND originator_version=?",
            (d[:-1] + bytes([d[-1] ^ 1]), a.id.hex, v),
        )
    conn.close()
    with AgentStore(db, keys=keys, master_key=MASTER) as store:
        with pytest.raises(DamagedLog, match=f"version {v} .*does not authenticate"):
            store.get(a.id)
        assert store.get(b.id).name == "b"


def test_forget_in_one_store_evicts_keys_cached_by_another_in_the_process(
    paths: tuple[str, str],
) -> None:
    db, keys = paths
    seen: list[Erasure] = []
    listener = on_forget(seen.append)
    try:
        with (
            AgentStore(db, keys=keys, master_key=MASTER) as writer,
            AgentStore(db, keys=keys, master_key=MASTER) as reader,
        ):
            agent = Agent("a")
            writer.add_subject(agent, "u")
            writer.save(agent)
            assert reader.get(agent.id).name == "a"  # its key is now cached by reader
            erasure = writer.forget("u")
            assert seen == [erasure]
            with pytest.raises(AgentForgotten):
                reader.get(agent.id)
    finally:
        remove_listener(listener)


def test_key_store_on_postgres(postgres_url: str) -> None:
    store = SQLKeyStore(postgres_url, MASTER)
    try:
        agent = Agent("a")
        ref = store.add_subjects(agent.id, ["user-9"])[0]
        key = store.agent_key(agent.id)
        assert isinstance(key, bytes) and len(key) == 32
        assert store.agents_of(ref) == (agent.id,)
        erasure = store.forget(ref, lambda ids: 7)
        assert erasure is not None and erasure.events == 7
        assert store.agent_key(agent.id) == erasure
        assert store.erasures() == [erasure]
    finally:
        store.close()
    with pytest.raises(MasterKeyError, match="not the one"):
        SQLKeyStore(postgres_url, os.urandom(32))


def test_worker_without_keys_refuses_sealed_events(paths: tuple[str, str], tmp_path: Path) -> None:
    db, keys = paths
    with AgentStore(db, keys=keys, master_key=MASTER) as store:
        agent = Agent("a")
        store.add_subject(agent, "u")
        store.save(agent)
    view = f"sqlite:///{tmp_path}/view.db"
    with (
        ProjectionWorker(AgentStats, db, view) as worker,
        pytest.raises(KeysRequired, match="encrypted"),
    ):
        worker.catch_up()


def test_cli_forget(paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    db, keys = paths
    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(MASTER).decode())
    with AgentStore(db, keys=keys) as store:
        agent = Agent("a")
        store.add_subject(agent, "user-42")
        store.save(agent)
    runner = CliRunner()
    result = runner.invoke(app, ["forget", "user-42", "--db", db, "--keys", keys, "--yes"])
    assert result.exit_code == 0, result.output
    assert "erasure record" in result.output and "user-42" not in result.output
    result = runner.invoke(app, ["forget", "user-42", "--db", db, "--keys", keys, "--yes"])
    assert result.exit_code == 0 and "nothing to forget" in result.output
    monkeypatch.delenv("SNAPTAIL_KEYS_URL", raising=False)
    result = runner.invoke(app, ["forget", "user-42", "--db", db, "--yes"])
    assert result.exit_code == 2 and "no key store" in result.output
    with AgentStore(db, keys=keys) as store, pytest.raises(AgentForgotten):
        store.get(agent.id)


def test_a_forgotten_subject_can_have_new_agents_even_in_another_process(
    paths: tuple[str, str],
) -> None:
    db, keys = paths
    with (
        AgentStore(db, keys=keys, master_key=MASTER) as here,
        AgentStore(db, keys=keys, master_key=MASTER) as there,
    ):
        first = Agent("a")
        there.add_subject(first, "u")  # "there" caches u's key
        there.save(first)
        assert here.forget("u") is not None
        second = Agent("b")
        there.add_subject(second, "u")  # a new key for u, not the forgotten one
        there.save(second)
        assert here.get(second.id).name == "b"
        with pytest.raises(AgentForgotten):
            here.get(first.id)
        third = Agent("c")  # and the other way round: "there" made u's new key
        here.add_subject(third, "u")
        here.save(third)
        assert here.forget("u") is not None
        fourth = Agent("d")
        here.add_subject(fourth, "u")
        here.save(fourth)
        assert there.get(fourth.id).name == "d"  # not opened with the stale cached key


def test_cli_snapshots_verify_and_inspect_a_forgotten_agent(
    paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, keys = paths
    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(MASTER).decode())
    monkeypatch.setenv("SNAPTAIL_KEYS_URL", keys)
    with AgentStore(db, snapshot_every=2) as store:
        gone, kept = Agent("gone"), Agent("kept")
        store.add_subject(gone, "user-1")
        gone.set_system_prompt("SECRET-PROMPT")
        kept.set_system_prompt("fine")
        store.save(gone, kept)
        store.forget("user-1")
    runner = CliRunner()
    result = runner.invoke(app, ["snapshots", "verify", "--db", db])
    assert result.exit_code == 0, result.output
    assert "1 forgotten" in result.output
    result = runner.invoke(app, ["inspect", str(gone.id), "--db", db])
    assert "forgotten" in result.output and "(redacted)" in result.output, result.output
    assert "SECRET" not in result.output


def test_console_shows_a_forgotten_agent_redacted(
    paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("starlette")
    from snaptail.ui.data import Console, NotFound

    db, keys = paths
    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(MASTER).decode())
    monkeypatch.setenv("SNAPTAIL_KEYS_URL", keys)
    with AgentStore(db) as store:
        gone = Agent("gone")
        store.add_subject(gone, "user-1")
        gone.set_system_prompt("SECRET-PROMPT")
        store.save(gone)
        console = Console(db)
        try:
            assert console.agent(str(gone.id))["version"] == 2  # readable before
            store.forget("user-1")
            with pytest.raises(NotFound, match="was forgotten at"):
                console.agent(str(gone.id))
            page = console.events(str(gone.id))
            assert [e["type"] for e in page["events"]] == ["RedactedEvent"] * 2
            shown = str(page) + str(console.event(str(gone.id), "2"))
            assert "SECRET" not in shown and "SystemPromptSet" in shown
        finally:
            console.close()
