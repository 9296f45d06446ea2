"""Every attack on a stored log that docs/INTEGRITY.md promises to catch, carried out.

Each test edits a copy of a signed, published, audited store the way an attacker with
access to the store (not to the signing key) would, then runs ``authtrail verify`` with
the key pinned, the auditor state and the publication, and expects exit 1 naming the
tenant, the seq and the kind of damage.
"""

from __future__ import annotations

import shutil
import time

from authtrail.sinks.tables import chain_hash_sql, leaf_hash_sql
from tests.tamper.conftest import REJECTIONS, Attacked, damage_of, event


def _last_seq(attacked: Attacked, tenant_id: str) -> int:
    store = attacked.store()
    try:
        return int(
            store.query_arrow(
                "SELECT max(seq) FROM events WHERE tenant_id = {t:String}", {"t": tenant_id}
            )
            .column(0)[0]
            .as_py()
        )
    finally:
        store.close()


def _second_checkpoint(attacked: Attacked, tenant_id: str) -> int:
    """The size of the tenant's second checkpoint (it has a predecessor and a successor)."""
    store = attacked.store()
    try:
        sizes = (
            store.query_arrow(
                "SELECT size FROM checkpoints WHERE tenant_id = {t:String} ORDER BY size",
                {"t": tenant_id},
            )
            .column(0)
            .to_pylist()
        )
    finally:
        store.close()
    assert len(sizes) >= 3
    return int(sizes[1])


def test_the_untouched_store_passes_every_check(attacked: Attacked) -> None:
    code, report, err = attacked.audit()
    assert code == 0, report
    assert report["store_damage"] == []
    assert all(r["damage"] is None and r["signed_size"] == r["records"] for r in report["tenants"])
    assert all(r["signed_by"] for r in report["tenants"])
    assert "warning" not in err  # the key was pinned


def test_a_modified_record_is_named(attacked: Attacked) -> None:
    attacked.mutate("ALTER TABLE events UPDATE user_name = 'mallory' "
                    "WHERE tenant_id = 'acme' AND seq = 7")  # fmt: skip
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, "acme") == ("modified", 7)


def test_a_truncated_tail_with_its_checkpoints_is_caught_by_state_and_publication(
    attacked: Attacked,
) -> None:
    last = _last_seq(attacked, "globex")
    cut = last - 25
    attacked.mutate(
        f"ALTER TABLE events DELETE WHERE tenant_id = 'globex' AND seq > {cut}",
        f"ALTER TABLE checkpoints DELETE WHERE tenant_id = 'globex' AND size > {cut}",
    )
    for extra in (("--state", str(attacked.state)), ("--published", str(attacked.published))):
        code, report, _ = attacked.verify(*extra)
        assert code == 1, extra
        assert damage_of(report, "globex") == ("truncated", cut + 1), extra
        assert damage_of(report, "acme") == (None, None)


def test_a_deleted_tenant_is_missing_also_when_verified_alone(attacked: Attacked) -> None:
    attacked.mutate(
        "ALTER TABLE events DELETE WHERE tenant_id = 'initech'",
        "ALTER TABLE checkpoints DELETE WHERE tenant_id = 'initech'",
    )
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, "initech") == ("tenant missing", 1)
    code, report, _ = attacked.audit("--tenant", "initech")
    assert code == 1 and damage_of(report, "initech") == ("tenant missing", 1)


def test_an_older_copy_of_the_whole_store_is_caught(attacked: Attacked) -> None:
    shutil.rmtree(attacked.data_dir / "clickhouse")
    shutil.copytree(attacked.older_store, attacked.data_dir / "clickhouse", symlinks=True)
    code, report, err = attacked.verify()  # the store alone is consistent
    assert code == 0, err
    code, report, _ = attacked.audit()
    assert code == 1
    kinds = {r["tenant_id"]: r["damage"] for r in report["tenants"]}
    assert set(kinds.values()) == {"truncated"}, kinds


def test_removed_checkpoints_over_intact_records_are_a_rollback(attacked: Attacked) -> None:
    last = _last_seq(attacked, "acme")
    attacked.mutate(
        f"ALTER TABLE checkpoints DELETE WHERE tenant_id = 'acme' AND size > {last - 30}"
    )
    code, report, _ = attacked.verify("--state", str(attacked.state))
    assert code == 1
    damage, seq = damage_of(report, "acme")
    assert damage in ("rolled back", "unsigned record") and seq is not None
    code, report, _ = attacked.verify("--state", str(attacked.state), "--unsigned-grace", "1e9")
    assert code == 1 and damage_of(report, "acme")[0] == "rolled back"


def _forge_next(attacked: Attacked, tenant_id: str, stored_at: str) -> int:
    """Append a correctly chained record after the tenant's last one, as an attacker can:
    copy the last row, change it, and recompute its leaf and chain hash."""
    seq = _last_seq(attacked, tenant_id) + 1
    where = f"WHERE tenant_id = '{tenant_id}' AND seq = {seq}"
    attacked.mutate(
        f"INSERT INTO events SELECT * REPLACE ({seq} AS seq, 'mallory' AS user_name, "
        f"'forged-{seq}' AS event_id, hash AS prev_hash, {stored_at} AS stored_at) "
        f"FROM (SELECT * FROM events WHERE tenant_id = '{tenant_id}' AND seq = {seq - 1})",
        f"ALTER TABLE events UPDATE leaf_hash = {leaf_hash_sql()} {where}",
        f"ALTER TABLE events UPDATE hash = {chain_hash_sql()} {where}",
    )
    return seq


def test_a_forged_record_after_the_last_checkpoint_is_caught_once_it_is_not_fresh(
    attacked: Attacked,
) -> None:
    seq = _forge_next(attacked, "acme", "now64(6) - INTERVAL 1 HOUR")
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, "acme") == ("unsigned record", seq)


def test_a_forged_record_dated_in_the_future_is_caught(attacked: Attacked) -> None:
    seq = _forge_next(attacked, "acme", "now64(6) + INTERVAL 1 DAY")
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, "acme") == ("unsigned record", seq)


def test_a_fresh_forged_record_is_pending_and_then_caught(attacked: Attacked) -> None:
    seq = _forge_next(attacked, "acme", "now64(6)")
    code, report, _ = attacked.verify()
    assert code == 0  # within the grace the sequencer has to sign it
    time.sleep(1.2)
    code, report, _ = attacked.verify("--unsigned-grace", "0")
    assert code == 1 and damage_of(report, "acme") == ("unsigned record", seq)


def test_a_key_planted_in_the_data_dir_is_not_trusted_when_the_key_is_pinned(
    attacked: Attacked,
) -> None:
    """The attacker re-signs acme's checkpoints with their own key and adds it to the .pub."""
    from authtrail.keys import load_signer, write_key_pair
    from authtrail.stream.core.checkpoint import Checkpoint, sign

    key, public = write_key_pair(attacked.data_dir.parent / "mallory", "authtrail")
    mallory = load_signer(key)
    with (attacked.data_dir / "keys" / "authtrail.pub").open("a") as pub:
        pub.write(public.read_text())
    store = attacked.store()
    try:
        rows = store.query_arrow(
            "SELECT size, note FROM checkpoints WHERE tenant_id = 'acme'"
        ).to_pylist()
        for row in rows:
            body = row["note"].encode().rpartition(b"\n\n")[0] + b"\n"
            note = sign(Checkpoint.parse(body), mallory).decode()
            store.command(
                "ALTER TABLE checkpoints UPDATE note = {n:String} WHERE tenant_id = 'acme' "
                f"AND size = {row['size']}".replace(
                    "{n:String}", "'" + note.replace("'", "\\'") + "'"
                ),
                {"mutations_sync": 2},
            )
    finally:
        store.close()
    code, report, _ = attacked.verify()
    assert code == 1 and damage_of(report, "acme")[0] == "forged checkpoint"
    assert report["trusted_keys"] and all("pinned.pub" in line for line in report["trusted_keys"])


def test_without_a_pinned_key_verify_warns_that_it_trusts_the_data_dir(attacked: Attacked) -> None:
    import contextlib
    import io

    from authtrail.cli import main as cli

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(["--data-dir", str(attacked.data_dir), "verify"])
    assert code == 0
    assert "no --key given" in err.getvalue() and "authtrail.pub" in err.getvalue()


def test_an_edited_checkpoint_column_is_a_modified_checkpoint(attacked: Attacked) -> None:
    size = _second_checkpoint(attacked, "globex")
    attacked.mutate("ALTER TABLE checkpoints UPDATE root = batch_root "
                    f"WHERE tenant_id = 'globex' AND size = {size}")  # fmt: skip
    code, report, _ = attacked.audit()
    assert code == 1
    assert damage_of(report, "globex") == ("modified checkpoint", size)


def test_a_duplicated_checkpoint_is_named_as_such(attacked: Attacked) -> None:
    attacked.mutate(
        "INSERT INTO checkpoints SELECT * REPLACE (kafka_offset + 1000000 AS kafka_offset)"
        " FROM (SELECT * FROM checkpoints WHERE tenant_id = 'acme' AND size = 40)"
    )
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, "acme") == ("duplicated checkpoint", 40)


def test_a_deleted_checkpoint_is_named_where_it_ended(attacked: Attacked) -> None:
    size = _second_checkpoint(attacked, "acme")
    attacked.mutate(f"ALTER TABLE checkpoints DELETE WHERE tenant_id = 'acme' AND size = {size}")
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, "acme") == ("missing checkpoint", size)


def test_a_damaged_tenant_still_reports_its_checkpoints(attacked: Attacked) -> None:
    attacked.mutate("ALTER TABLE events DELETE WHERE tenant_id = 'acme' AND seq = 3")
    code, report, _ = attacked.audit()
    (acme,) = [r for r in report["tenants"] if r["tenant_id"] == "acme"]
    assert code == 1 and (acme["damage"], acme["seq"]) == ("deleted", 3)
    assert acme["checkpoints"] > 0 and acme["signed_size"] > 0


def test_a_redefined_lockouts_view_is_named(attacked: Attacked) -> None:
    attacked.mutate("CREATE OR REPLACE VIEW lockouts AS SELECT * FROM events WHERE 0")
    code, report, _ = attacked.audit()
    assert code == 1
    assert [(d["name"], d["damage"]) for d in report["store_damage"]] == [
        ("lockouts", "modified definition")
    ]


def test_a_redefined_or_dropped_analyst_view_is_named(attacked: Attacked) -> None:
    # A chain_status that shows every log signed, and a view the analyst relies on gone.
    attacked.mutate(
        "CREATE OR REPLACE VIEW chain_status AS SELECT tenant_id, count() AS records, "
        "max(size) AS last_seq, max(size) AS signed_size, 0 AS unsigned_tail "
        "FROM checkpoints GROUP BY tenant_id",
        "DROP VIEW failed_logins_hourly",
    )
    code, report, _ = attacked.audit()
    assert code == 1
    assert [(d["name"], d["damage"]) for d in report["store_damage"]] == [
        ("failed_logins_hourly", "missing definition"),
        ("chain_status", "modified definition"),
    ]


def test_a_table_swapped_for_a_view_is_named(attacked: Attacked) -> None:
    attacked.mutate("RENAME TABLE checkpoints TO checkpoints_real",
                    "CREATE VIEW checkpoints AS SELECT * FROM checkpoints_real")  # fmt: skip
    code, report, _ = attacked.audit()
    assert code == 1
    assert ("checkpoints", "modified definition") in [
        (d["name"], d["damage"]) for d in report["store_damage"]
    ]


def test_removed_tenant_directories_of_the_publication_are_a_rollback(attacked: Attacked) -> None:
    newest = sorted((attacked.published / "tenants").iterdir())[-1]
    newest.unlink()
    code, report, _ = attacked.audit()
    assert code == 1
    assert [d["damage"] for d in report["store_damage"]] == ["rolled back"]


def test_a_forged_published_checkpoint_is_named(attacked: Attacked) -> None:
    newest = sorted((attacked.published / "checkpoints" / "acme").iterdir())[-1]
    newest.chmod(0o644)
    newest.write_bytes(newest.read_bytes().replace(b"authtrail-time ", b"authtrail-time 1"))
    code, report, _ = attacked.verify("--published", str(attacked.published))
    assert code == 1
    assert [d["damage"] for d in report["store_damage"]] == ["forged checkpoint"]


def test_a_history_rewritten_with_a_stolen_key_is_a_fork(attacked: Attacked) -> None:
    """Even the signing key does not let an insider change what an auditor already saw."""
    from tests.tamper.conftest import Writer

    last = _last_seq(attacked, "initech")
    attacked.mutate(
        "ALTER TABLE events DELETE WHERE tenant_id = 'initech'",
        "ALTER TABLE checkpoints DELETE WHERE tenant_id = 'initech'",
    )
    writer = Writer(attacked.data_dir)
    store = attacked.store()
    try:
        writer.append(store, [event(n, "initech", "someone-else") for n in range(last + 5)])
    finally:
        store.close()
    code, report, _ = attacked.verify()
    assert code == 0  # consistent and signed: only an earlier view can tell
    code, report, _ = attacked.audit()
    assert code == 1
    assert damage_of(report, "initech") == ("forked", last)


def test_published_checkpoints_without_a_witness_cosignature_fail_until_cosigned(
    attacked: Attacked,
) -> None:
    """`--witnesses 1`: each tenant's newest published note needs a trusted cosignature."""
    from authtrail.sinks.publication_files import newest_checkpoints, note_body, note_file_name
    from authtrail.stream.core.cosignature import append_cosignatures, cosign, witness_key_of
    from authtrail.stream.core.note import Signer, generate_key_strings

    witness = Signer.parse(generate_key_strings("witness.test/w1")[0])
    vkey = attacked.data_dir.parent / "witness.vkey"
    vkey.write_text(witness_key_of(witness).key_string() + "\n")
    flags = ("--published", str(attacked.published), "--witness-key", str(vkey),
             "--witnesses", "1")  # fmt: skip
    code, report, _ = attacked.verify(*flags)
    assert code == 1
    assert [d["damage"] for d in report["store_damage"]] == ["missing cosignatures"] * 4
    assert all(r["damage"] is None for r in report["tenants"])  # the store itself is intact

    # The publisher's part, by hand: cosign each tenant's newest note, publish it again.
    for tenant_id, (size, note) in newest_checkpoints(attacked.published).items():
        path = attacked.published / "checkpoints" / tenant_id / note_file_name(size)
        path.chmod(0o644)
        line = cosign(note_body(note), witness, int(time.time()))
        path.write_bytes(append_cosignatures(note, [line]))
    code, report, _ = attacked.verify(*flags)
    assert code == 0, report
    assert report["store_damage"] == []
    publication = report["publication"]
    assert publication["witnesses_required"] == 1
    assert {t["tenant_id"] for t in publication["tenants"]} == {
        "acme", "globex", "initech", REJECTIONS,
    }  # fmt: skip
    assert all(
        [label.split("+")[0] for label in t["cosigned_by"]] == ["witness.test/w1"]
        for t in publication["tenants"]
    )


# --- the rejection log (docs/INTEGRITY.md §12) -------------------------------------------


def test_the_rejection_log_is_verified_like_a_tenant(attacked: Attacked) -> None:
    code, report, _ = attacked.audit()
    assert code == 0
    (log,) = [r for r in report["tenants"] if r["tenant_id"] == REJECTIONS]
    assert (log["records"], log["signed_size"], log["damage"]) == (45, 45, None)


def test_a_deleted_rejection_is_named(attacked: Attacked) -> None:
    attacked.mutate(f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{REJECTIONS}' "
                    "AND seq = 12")  # fmt: skip
    code, report, _ = attacked.verify()
    assert code == 1 and damage_of(report, REJECTIONS) == ("deleted", 12)
    assert damage_of(report, "acme") == (None, None)


def test_an_edited_rejection_is_named(attacked: Attacked) -> None:
    for column, value in (("reason", "'fine'"), ("original", "'\\x00garbage 99'"),
                          ("tenant_id", "'acme'"), ("source_offset", "1")):  # fmt: skip
        attacked.mutate(f"ALTER TABLE rejected UPDATE {column} = {value} "
                        f"WHERE chain_tenant_id = '{REJECTIONS}' AND seq = 33")  # fmt: skip
        code, report, _ = attacked.verify()
        assert code == 1 and damage_of(report, REJECTIONS) == ("modified", 33), column


def test_an_edited_envelope_index_of_a_rejection_is_named(attacked: Attacked) -> None:
    """Seq 33 was event 2 of an envelope, seq 12 a bare message: the index is evidence."""
    for seq, value in ((33, "0"), (33, "NULL"), (12, "0")):
        attacked.mutate(f"ALTER TABLE rejected UPDATE source_index = {value} "
                        f"WHERE chain_tenant_id = '{REJECTIONS}' AND seq = {seq}")  # fmt: skip
        code, report, _ = attacked.verify()
        assert code == 1 and damage_of(report, REJECTIONS) == ("modified", seq), (seq, value)


def test_rejections_truncated_or_deleted_with_their_checkpoints_are_caught(
    attacked: Attacked,
) -> None:
    attacked.mutate(
        f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{REJECTIONS}' AND seq > 35",
        f"ALTER TABLE checkpoints DELETE WHERE tenant_id = '{REJECTIONS}' AND size > 35",
    )
    code, report, _ = attacked.verify()
    assert code == 0  # the store alone is consistent: the publication is what remembers
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, REJECTIONS) == ("truncated", 36)
    attacked.mutate(
        f"ALTER TABLE rejected DELETE WHERE chain_tenant_id = '{REJECTIONS}'",
        f"ALTER TABLE checkpoints DELETE WHERE tenant_id = '{REJECTIONS}'",
    )
    code, report, _ = attacked.audit()
    assert code == 1 and damage_of(report, REJECTIONS) == ("tenant missing", 1)


def test_rows_in_the_wrong_table_are_misplaced(attacked: Attacked) -> None:
    attacked.mutate(f"ALTER TABLE rejected UPDATE chain_tenant_id = 'acme' "
                    f"WHERE chain_tenant_id = '{REJECTIONS}' AND seq = 2")  # fmt: skip
    code, report, _ = attacked.verify()
    assert code == 1 and damage_of(report, "acme") == ("misplaced record", 1)
    assert damage_of(report, REJECTIONS) == ("deleted", 2)
