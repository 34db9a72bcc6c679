"""How the store passes key lists to Postgres: one joined text normally, a binary array for a
key the joined form could not carry."""

from __future__ import annotations

from order_recovery.adapters.postgres.store import LIST_SEPARATOR, _key_list


def test_keys_travel_as_one_text_split_by_postgres():
    sql, value = _key_list(["ord-1", "ord-2"])
    assert sql.startswith("string_to_array(%s")
    assert value == f"ord-1{LIST_SEPARATOR}ord-2"


def test_an_empty_list_is_the_empty_array():
    assert _key_list([]) == (_key_list(["x"])[0], "")


def test_a_key_holding_the_separator_goes_as_a_binary_array():
    keys = ["ord-1", f"odd{LIST_SEPARATOR}key"]
    assert _key_list(keys) == ("%b::text[]", keys)
