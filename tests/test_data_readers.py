"""Readers, validation messages, k-core, id remapping, known-dataset resolution / download, stats."""
from __future__ import annotations

import hashlib
import io
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from seqrec.config import DataConfig
from seqrec.data import known
from seqrec.data.known import DataFile, KnownDataset, download_file, get_known, resolve_dataset
from seqrec.data.loading import load_dataset, read_data_file
from seqrec.data.readers import k_core_filter, read_attributes, read_inter, read_s3rec, read_table
from seqrec.data.stats import check_dataset, dataset_stats, format_stats
from seqrec.errors import ConfigError, DataError
from conftest import one_line_error

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sequences(data) -> list[list[int]]:
    return [data.sequence(u).tolist() for u in range(data.n_users)]


def raises(match_parts: list[str], fn, *args, **kwargs) -> str:
    """Call fn, expect a one-line DataError containing every string in match_parts; return the message."""
    return one_line_error(DataError, match_parts, fn, *args, **kwargs)


# ---------------------------------------------------------------------------------------------------------- s3rec


def test_s3rec_round_trip_keeps_ids_and_gaps(tmp_path):
    # Taobao-like: user ids with a gap, item 4 never used, n_items = largest id; trailing blank line is fine
    path = write(tmp_path / "Tiny.txt", "1 1 2 3\n2 5 5 1\n7 3 2\n\n")
    data = read_s3rec(path)
    assert sequences(data) == [[1, 2, 3], [5, 5, 1], [3, 2]]
    assert data.user_ids.tolist() == [1, 2, 7]
    assert data.offsets.tolist() == [0, 3, 6, 8]
    assert data.n_items == 5 and data.name == "Tiny" and data.source == str(path)
    assert data.attributes is None


def test_s3rec_attributes(tmp_path):
    text = write(tmp_path / "Tiny.txt", "1 1 2 3\n2 3 1\n")
    attrs = write(tmp_path / "Tiny_item2attributes.json",
                  json.dumps({"0": [9], "1": [2, 1, 2], "3": [4]}))   # "0" ignored, repeated 2 kept once
    a = read_s3rec(text, attrs).attributes
    assert a.offsets.tolist() == [0, 0, 2, 2, 3, 3]                     # rows 0..n_items + 1
    assert a.ids.tolist() == [2, 1, 4]
    assert a.n_attributes == 4


@pytest.mark.parametrize("content, parts", [
    ("1 1 2\n2 3 x4\n", ["line 2", "'x4'", "not an integer"]),
    ("1 1 2\n\n2 3 0\n", ["line 3", "'0'", "< 1"]),
    ("1 1 2\n2 -3\n", ["line 2", "'-3'", "< 1"]),
    ("1 1 2\n0 3\n", ["line 2", "user id", "'0'"]),
    ("1 1 2\n2 3\n1 4\n", ["line 3", "line 1", "user 1"]),
    ("1 1 2\n5\n", ["line 2", "user 5 has no items"]),
    ("   \n\n", ["empty"]),
])
def test_s3rec_errors_name_file_and_line(tmp_path, content, parts):
    path = write(tmp_path / "Bad.txt", content)
    raises(["Bad.txt", *parts], read_s3rec, path)


def test_s3rec_sparse_item_ids_are_remapped(tmp_path):
    # raw ids of 1e9 and more would mean an embedding row per id: remapped to 1..n in increasing order of the id
    path = write(tmp_path / "Big.txt", "1 1000000000 5 3000000000\n2 5 1000000000\n3 7\n")
    write(tmp_path / "Big_item2attributes.json", json.dumps({"1000000000": [2], "7": [1], "99": [3]}))
    data = read_s3rec(path, tmp_path / "Big_item2attributes.json")
    assert sequences(data) == [[3, 1, 4], [1, 3], [2]] and data.n_items == 4
    assert data.item_vocab.originals.tolist() == [5, 7, 1000000000, 3000000000]
    assert data.attributes.offsets.tolist() == [0, 0, 0, 1, 2, 2, 2]      # item 99 is not in the data: ignored
    assert data.attributes.ids.tolist() == [1, 2]
    assert any("item ids are remapped to 1..4 internally (original ids 5..3000000000)" in n for n in check_dataset(path))
    # dense ids and moderate gaps (Taobao) are kept exactly as they are
    gaps = read_s3rec(write(tmp_path / "Gaps.txt", "1 1 1000000\n2 3 1\n"))
    assert gaps.n_items == 1000000 and gaps.item_vocab.is_identity


def test_s3rec_ids_beyond_int64_are_one_line_errors(tmp_path):
    raises(["Huge.txt", "line 2", "item id '99999999999999999999'", "2**63 - 1"], read_s3rec,
           write(tmp_path / "Huge.txt", "1 1 2\n2 3 99999999999999999999\n"))
    raises(["Huge.txt", "line 1", "user id '18446744073709551616'"], read_s3rec,
           write(tmp_path / "Huge.txt", "18446744073709551616 1 2\n"))


def test_missing_file(tmp_path):
    raises(["Nope.txt", "not found"], read_s3rec, tmp_path / "Nope.txt")
    raises(["nope.csv", "not found"], read_table, tmp_path / "nope.csv", "csv")


@pytest.mark.parametrize("content, parts", [
    ('[[1, 2]]', ["top level is a JSON list", "expected an object"]),
    ('{"1": [1], "2": "abc"}', ["key '2'", "not a list of integer attribute ids"]),
    ('{"1": [1, 2.5]}', ["key '1'"]),
    ('{"1": [0]}', ["key '1'", ">= 1"]),
    ('{"one": [1]}', ["key 'one'", "not an item id"]),
    ('{"9": [1]}', ["key '9'", "larger than the largest item id 3"]),
    ('{"1": [1],\n "2": [2,]}', ["line 2", "not valid JSON"]),
])
def test_attribute_file_errors_name_the_key(tmp_path, content, parts):
    path = write(tmp_path / "Tiny_item2attributes.json", content)
    raises(["Tiny_item2attributes.json", *parts], read_attributes, path, 3)


# ---------------------------------------------------------------------------------------------------- raw tables

STABLE_CSV = "user_id,item_id,timestamp\n7,30,5\n7,10,1\n8,20,3\n7,20,5\n7,40,1\n"


def test_csv_sorted_stably_by_time_and_remapped(tmp_path):
    data = read_table(write(tmp_path / "t.csv", STABLE_CSV), "csv")
    # items numbered in order of first appearance in the file: 30->1, 10->2, 20->3, 40->4
    assert data.item_vocab.originals.tolist() == [30, 10, 20, 40]
    # user 7 sorted by time, ties (t=1: 10 then 40; t=5: 30 then 20) in file order
    assert sequences(data) == [[2, 4, 1, 3], [3]]
    assert data.user_ids.tolist() == [7, 8] and data.user_vocab.originals.tolist() == [7, 8]
    assert data.n_items == 4 and data.name == "t"


def test_csv_without_time_column_keeps_file_order(tmp_path):
    data = read_table(write(tmp_path / "t.csv", STABLE_CSV), "csv", time_col=None)
    assert sequences(data) == [[1, 2, 3, 4], [3]]


def test_tsv_and_iso_timestamps(tmp_path):
    text = "user\titem\twhen\nu\tb\t2021-01-02T00:00:00\nu\ta\t2021-01-01T00:00:00\n"
    data = read_table(write(tmp_path / "t.tsv", text), "tsv", "user", "item", "when")
    assert data.item_vocab.originals.tolist() == ["b", "a"]          # string ids stay strings
    assert sequences(data) == [[2, 1]]
    assert data.user_ids.tolist() == ["u"]


def test_inter_typed_header_and_string_ids(tmp_path):
    text = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
            "A\tx\t5\t300\nB\ty\t3\t100\nA\ty\t4\t100\n")
    data = read_inter(write(tmp_path / "toy.inter", text))
    assert sequences(data) == [[2, 1], [2]]
    assert data.item_vocab.originals.tolist() == ["x", "y"] and data.user_ids.tolist() == ["A", "B"]


def test_leading_zero_ids_stay_distinct(tmp_path):
    data = read_table(write(tmp_path / "t.csv", "user_id,item_id\n1,07\n1,7\n"), "csv", time_col=None)
    assert data.item_vocab.originals.tolist() == ["07", "7"] and data.n_items == 2


KCORE_CSV = ("user_id,item_id,timestamp\n"
             "u1,a,1\nu2,a,5\nu3,a,1\nu1,b,2\nu4,c,1\nu1,c,3\nu3,d,2\nu2,b,6\n")


def test_k_core_is_iterative(tmp_path):
    # k=2. Pass 1 drops u4 (1 row) and item d (1 row). Then u3 has only (u3,a) and c only (u1,c): pass 2 drops
    # them. Left: u1 a b, u2 a b, stable. A single pass would have kept u3 and c.
    data = read_table(write(tmp_path / "k.csv", KCORE_CSV), "csv", k_core=2)
    assert data.user_ids.tolist() == ["u1", "u2"]
    assert data.item_vocab.originals.tolist() == ["a", "b"]
    assert sequences(data) == [[1, 2], [1, 2]]
    # k=0 and 1 keep everything
    assert read_table(tmp_path / "k.csv", "csv", k_core=1).n_users == 4


def test_k_core_filter_mask_and_empty_result(tmp_path):
    users = np.array([0, 0, 1])
    items = np.array([0, 1, 0])
    assert k_core_filter(users, items, 2).tolist() == [False, False, False]
    raises(["k.csv", "3-core"], read_table, write(tmp_path / "k.csv", KCORE_CSV), "csv", k_core=3)


@pytest.mark.parametrize("name, content, kwargs, parts", [
    ("t.csv", "user_id,item\n1,2\n", {}, ["missing column 'item_id'", "available columns: user_id, item"]),
    ("t.csv", "user_id,item_id\n1,2\n", {}, ["missing column 'timestamp'", "time_col"]),
    ("t.csv", "user_id,item_id,timestamp\n1,2,3\n1,2\n", {}, ["line 3", "2 fields", "expected 3"]),
    ("t.csv", "user_id,item_id,timestamp\n1,2,3\n1,,4\n", {}, ["line 3", "'item_id' is empty"]),
    ("t.csv", "user_id,item_id,timestamp\n1,2,3\n\n1,3,soon\n", {}, ["line 4", "'soon'", "timestamp"]),
    ("t.csv", "user_id,item_id,timestamp\n1,2,nan\n", {}, ["line 2", "'nan'"]),
    # ids written as a missing value (pandas, R, Spark, str(None)) are not ids
    ("t.csv", "user_id,item_id,timestamp\n1,2,3\n1,NaN,4\n", {}, ["line 3", "'item_id'", "'NaN'", "missing"]),
    ("t.csv", "user_id,item_id,timestamp\n1,2,3\nnull,3,4\n", {}, ["line 3", "'user_id'", "'null'", "missing"]),
    ("t.tsv", "user_id\titem_id\n1\t2\n1\tNone\n", {"time_col": None}, ["line 3", "'item_id'", "'None'"]),
    ("t.csv", "user_id,item_id\n1,2\n2, <NA> \n", {"time_col": None}, ["line 3", "'item_id'", "'<NA>'"]),
    ("t.csv", "user_id,item_id,timestamp\n", {}, ["no rows after the header"]),
    ("t.csv", "", {}, ["empty"]),
    ("t.inter", "user_id:token\titem_id:token\n", {"time_col": "ts"}, ["missing column 'ts'", "user_id:token"]),
])
def test_table_errors(tmp_path, name, content, kwargs, parts):
    path = write(tmp_path / name, content)
    fmt = path.suffix[1:]
    raises([name, *parts], read_table, path, fmt, **kwargs)


def test_unknown_format_lists_valid_ones(tmp_path):
    path = write(tmp_path / "t.xlsx", "x")
    raises(["t.xlsx", "'xlsx'", "csv, tsv, parquet"], read_table, path, "xlsx")
    raises(["t.xlsx", "'.xlsx'", ".inter", "data.format"], read_data_file, path)
    raises(["t.xlsx", "'excel'", "s3rec"], read_data_file, path, "excel")


def test_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        path.write_bytes(b"PAR1")
        raises(["t.parquet", "pip install seqrec[parquet]"], read_table, path, "parquet")
        return
    pd.DataFrame({"user_id": [7, 7, 8], "item_id": [30, 10, 30], "timestamp": [2, 1, 0]}).to_parquet(path)
    data = read_data_file(path, time_col="timestamp")
    assert sequences(data) == [[2, 1], [1]] and data.item_vocab.originals.tolist() == [30, 10]
    raises(["t.parquet", "missing column 'ts'", "user_id"], read_table, path, "parquet", time_col="ts")
    pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "NaN"], "timestamp": [1, 2]}).to_parquet(path)
    raises(["t.parquet", "row 2", "'item_id'", "'NaN'", "missing"], read_table, path, "parquet")


# ---------------------------------------------------------------------------------------------- loading, known


def test_get_known_names_and_stems():
    assert get_known("beauty").name == "Beauty"
    assert get_known("Sports_and_Outdoors").name == "Sports"
    assert get_known("toys_and_games").name == "Toys"
    assert get_known("ml-1m").name == get_known("ML1M").name == "ML-1M"
    assert get_known("taobao").attributes is None
    assert get_known("Beauty.txt") is None and get_known("synthetic") is None


def isolate(monkeypatch, tmp_path) -> Path:
    """No SEQREC_DATA, a private cache, and a cwd whose ../shared/data does not exist."""
    monkeypatch.delenv("SEQREC_DATA", raising=False)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path / "cache"


def test_resolve_known_dataset_in_data_dir(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    write(data_dir / "Toys_and_Games.txt", "1 1 2 3\n2 2 3\n")
    write(data_dir / "Toys_and_Games_item2attributes.json", '{"1": [1], "2": [2], "3": [1, 2]}')
    with pytest.warns(UserWarning, match="bytes"):      # our copy is not the published size: warn, use it
        text, attrs = resolve_dataset("toys", data_dir=data_dir, download=False)
    assert text == data_dir / "Toys_and_Games.txt"
    assert attrs == data_dir / "Toys_and_Games_item2attributes.json"

    cfg = DataConfig(dataset="Toys", data_dir=str(data_dir), download=False)
    with pytest.warns(UserWarning):
        data = load_dataset(cfg)
    assert data.name == "Toys" and sequences(data) == [[1, 2, 3], [2, 3]]
    assert data.attributes.ids.tolist() == [1, 2, 1, 2]
    cfg.attributes = "none"
    with pytest.warns(UserWarning):
        assert load_dataset(cfg).attributes is None
    cfg.k_core = 5
    with pytest.raises(ConfigError, match="k_core"):
        load_dataset(cfg)


def test_resolve_dataset_unknown_name():
    raises(["'Nothing'", "known datasets: Beauty"], resolve_dataset, "Nothing")


def fake_dataset(monkeypatch, payload: bytes, sha: str) -> None:
    spec = DataFile("Fake.txt", len(payload), sha, "https://example.invalid/Fake.txt")
    monkeypatch.setitem(known.KNOWN_DATASETS, "Fake", KnownDataset("Fake", spec, None))


def serve(monkeypatch, payload: bytes | None) -> list[str]:
    """Replace urlopen: serve `payload` for every URL, or fail like an offline machine when None."""
    requested: list[str] = []

    def urlopen(url, timeout=None):
        requested.append(url)
        if payload is None:
            raise urllib.error.URLError("no network")
        return io.BytesIO(payload)
    monkeypatch.setattr(known.urllib.request, "urlopen", urlopen)
    return requested


def test_download_accepts_matching_sha256(tmp_path, monkeypatch):
    cache = isolate(monkeypatch, tmp_path)
    payload = b"1 1 2 3\n2 3 1\n"
    fake_dataset(monkeypatch, payload, hashlib.sha256(payload).hexdigest())
    requested = serve(monkeypatch, payload)
    text, attrs = resolve_dataset("fake")
    assert requested == ["https://example.invalid/Fake.txt"]
    assert text == cache / "Fake.txt" and text.read_bytes() == payload and attrs is None
    assert sorted(p.name for p in cache.iterdir()) == ["Fake.txt"]
    # found in the cache the second time: no new request
    assert resolve_dataset("fake") == (text, None) and len(requested) == 1


def test_download_rejects_wrong_sha256_and_leaves_nothing(tmp_path, monkeypatch):
    cache = isolate(monkeypatch, tmp_path)
    fake_dataset(monkeypatch, b"x", "0" * 64)
    serve(monkeypatch, b"1 1 2 3\n")
    raises(["https://example.invalid/Fake.txt", "sha256", "Fake.txt"], resolve_dataset, "Fake")
    assert list(cache.iterdir()) == []


def test_download_network_failure_says_where_to_put_the_file(tmp_path, monkeypatch):
    cache = isolate(monkeypatch, tmp_path)
    fake_dataset(monkeypatch, b"x", "0" * 64)
    serve(monkeypatch, None)
    message = raises(["https://example.invalid/Fake.txt", "no network", "put Fake.txt into one of", str(cache)],
                     resolve_dataset, "Fake")
    assert str(tmp_path / "mine") in raises([], resolve_dataset, "Fake", data_dir=tmp_path / "mine")
    assert "failed" in message
    raises(["Fake.txt not found", "data.download"], resolve_dataset, "Fake", download=False)


def test_download_file_direct(tmp_path, monkeypatch):
    payload = b"abc"
    serve(monkeypatch, payload)
    target = download_file("https://x/y", tmp_path / "d" / "y", hashlib.sha256(payload).hexdigest())
    assert target.read_bytes() == payload
    # the mode of any new file (0o666 less the umask), not mkstemp's private 0o600
    from seqrec.utils import default_file_mode
    assert target.stat().st_mode & 0o777 == default_file_mode()


def test_load_dataset_paths_and_synthetic(tmp_path):
    data = load_dataset(DataConfig(synthetic_users=30, synthetic_items=20))
    assert data.n_users == 30 and data.n_items == 20 and data.name == "synthetic"

    text = write(tmp_path / "Shop.txt", "1 1 2 3\n2 2 1\n")
    write(tmp_path / "Shop_item2attributes.json", '{"1": [1], "2": [2]}')
    data = load_dataset(DataConfig(dataset=str(text)))
    assert data.name == "Shop" and data.attributes is not None and data.attributes.n_attributes == 2
    assert load_dataset(DataConfig(dataset="x", path=str(text), attributes="none")).attributes is None

    table = write(tmp_path / "log.csv", "user_id,item_id,timestamp\nu,b,2\nu,a,1\n")
    attrs = write(tmp_path / "attrs.json", '{"a": [3], "b": [1], "zzz": [2]}')   # keys are original item ids
    data = load_dataset(DataConfig(dataset=str(table), attributes=str(attrs)))
    assert sequences(data) == [[2, 1]] and data.name == "log"
    assert data.attributes.offsets.tolist() == [0, 0, 1, 2, 2] and data.attributes.ids.tolist() == [1, 3]
    raises(["nothing.txt", "not found"], load_dataset, DataConfig(dataset=str(tmp_path / "nothing.txt")))


# -------------------------------------------------------------------------------------------------------- stats


def test_stats_and_check_on_hand_made_file(tmp_path):
    path = write(tmp_path / "Small.txt", "1 1 2 1\n2 2\n4 5 2 2 2\n")
    stats = dataset_stats(read_s3rec(path))
    assert (stats["users"], stats["items"], stats["max_item_id"], stats["interactions"]) == (3, 3, 5, 8)
    assert (stats["length_min"], stats["length_max"], stats["short_users"]) == (1, 4, 1)
    assert stats["users_with_repeats"] == 2 and stats["repeated_interactions"] == 3
    assert stats["length_histogram"]["1-2"] == 1 and stats["length_histogram"]["3-4"] == 2
    assert "interactions" in format_stats(stats)
    issues = check_dataset(path)
    assert issues[0].startswith("note:") and "3 users, 3 items, 8 interactions" in issues[0]
    joined = "\n".join(issues)
    assert "1 users have fewer than 3" in joined and "2 item ids in 1..5 never occur (3, 4)" in joined
    assert "user ids are not 1..3" in joined and "repeated" in joined
    raises(["Broken.txt", "line 1"], check_dataset, write(tmp_path / "Broken.txt", "1 a\n"))


def test_check_synthetic_and_data_config(tmp_path):
    from seqrec.data.stats import check_data
    assert "2,000 users, 500 items" in check_dataset("synthetic")[0]
    assert "30 users" in check_data(DataConfig(synthetic_users=30))[0]
    table = write(tmp_path / "log.csv", "user,item\nu,a\nu,b\nu,a\nv,b\n")
    notes = check_data(DataConfig(dataset=str(table), user_col="user", item_col="item", time_col=None))
    assert "2 users, 2 items, 4 interactions" in notes[0] and any("remapped to 1..2" in n for n in notes)
    raises(["log.csv", "missing column 'user_id'"], check_data, DataConfig(dataset=str(table)))


def test_beauty_stats():
    path = SHARED_DATA / "Beauty.txt"
    if not path.is_file():
        pytest.skip(f"{SHARED_DATA} not available")
    data = read_data_file(path)
    stats = dataset_stats(data)
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert stats["n_attributes"] == 637 and stats["users_with_repeats"] == 0
    assert "22,363 users, 12,101 items, 198,502 interactions" in check_dataset(path)[0]


def test_iso_times_without_zone_are_utc_whatever_the_machine_zone(tmp_path, monkeypatch):
    """A zone-less ISO date-time is UTC (as pandas reads naive Parquet datetimes): the same file gives the same
    times under any TZ."""
    import time
    from seqrec.data.readers import _parse_time
    got = {}
    for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        got[tz] = (_parse_time("2020-01-02T03:04:05"), _parse_time("2020-01-02T03:04:05+09:00"))
    monkeypatch.delenv("TZ")
    time.tzset()
    assert got["UTC"] == got["Asia/Tokyo"] == got["America/New_York"]
    assert got["UTC"][0] == 1577934245.0                      # hand-computed: 2020-01-02 03:04:05 UTC
    assert got["UTC"][1] == 1577934245.0 - 9 * 3600
