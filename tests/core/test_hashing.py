"""The shared hashes (w4s/hashing.py) and the persisted keys built on them: a key that
changed its bytes would orphan every call-cache entry and split old trajectory rows from
new ones, so their values are pinned here."""

from __future__ import annotations

import hashlib

from w4s.benchmarks.base import Item
from w4s.hashing import file_sha256, json_sha256, sha256_text, stream_sha256
from w4s.mdp import hash_code, hash_messages
from w4s.sandbox import SandboxSettings
from w4s.sandbox.cache import MemoryCallCache, call_key
from w4s.sandbox.outcomes import OutcomeStore


def test_persisted_keys_keep_their_values():
    assert hash_messages([{"role": "user", "content": "Qué? 2+2"}]) == "94a05808b1c0eaa2"
    assert hash_code("print(1)") == "d287bb7f9d15abdc" and hash_code(None) is None
    assert call_key(model="m", messages=[{"role": "user", "content": "é"}], temperature=0.5,
                    max_tokens=None, json_mode=False, sample_index=1) == (
        "d403b0b76fe93fb75c2ce329c20fa7c559d053731b54e158b70b65d68f72cb88")
    store = OutcomeStore(MemoryCallCache(), SandboxSettings(), "m@max_new_tokens=5")
    assert store.key("print(1)", Item(id="i1", question="Qué es 2+2?", gold="4")) == (
        "outcome:8c4c0ccd45c5793d04d17fc4b800a949d47fd83ffb9870dc9ed323f4b9f4eb10")


def test_json_hash_ignores_key_order_and_names_its_encoding():
    a, b = {"b": [1, "é"], "a": {"z": None}}, {"a": {"z": None}, "b": [1, "é"]}
    assert json_sha256(a) == json_sha256(b)
    assert json_sha256(a) == sha256_text('{"a":{"z":null},"b":[1,"é"]}')
    assert json_sha256(a, ascii_only=True) == sha256_text('{"a":{"z":null},"b":[1,"\\u00e9"]}')
    assert json_sha256(a, compact=False) == sha256_text('{"a": {"z": null}, "b": [1, "é"]}')


def test_file_hash_streams_the_whole_file(tmp_path):
    data = bytes(range(256)) * 9000  # more than one 1 MiB chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256(b"prefix")
    with open(path, "rb") as f:
        assert stream_sha256(f, digest) is digest
    assert digest.hexdigest() == hashlib.sha256(b"prefix" + data).hexdigest()
