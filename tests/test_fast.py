"""The fast lookup-table paths give exactly the clear versions' answers."""
import json

import numpy as np
import pytest

from int4ref import _fast, bench
from int4ref.formats import FORMATS

f32 = np.float32
TABLE_FORMATS = [f for f in FORMATS.values() if f.table is not None]


def probe_values(fmt):
    bits = np.arange(1 << 16, dtype=np.uint32) << 16
    edges = np.concatenate([bits, bits | 0xFFFF]).view(f32)  # both ends of every bucket
    edges = edges[np.isfinite(edges)]
    mids = fmt._midpoints
    near = np.concatenate([mids, np.nextafter(mids, -np.inf), np.nextafter(mids, np.inf), -mids])
    rnd = np.random.default_rng(0).uniform(-1, 1, 100_000).astype(f32)
    return np.concatenate([edges, near.astype(f32), rnd, np.array([0.0, -0.0], f32)])


@pytest.mark.parametrize("fmt", TABLE_FORMATS, ids=lambda f: f.name)
def test_bucket_lookup_equals_binary_search(fmt):
    v = probe_values(fmt)
    assert np.array_equal(_fast.nearest(fmt, v), fmt.nearest(v))


@pytest.mark.parametrize("fmt", TABLE_FORMATS, ids=lambda f: f.name)
def test_byte_pair_decoding(fmt):
    packed = np.arange(256, dtype=np.uint8)
    out = np.empty(512, f32)
    _fast.decode_pairs(packed, fmt.table, out)
    assert np.array_equal(out[0::2], fmt.table[packed >> 4]) and np.array_equal(out[1::2], fmt.table[packed & 15])


def test_bench_runs_small(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["cpu", "--size", "128", "--repeats", "1", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    names = [r["name"] for r in result["rows"]]
    assert "Q4_0 quantize" in names and "NF4 blocksize 64 quantize" in names
    for row in result["rows"]:
        assert row["skipped"] or row["ours_ms"] > 0
    assert "int4ref ms" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", TABLE_FORMATS, ids=lambda f: f.name)
def test_quantize_groups_same_codes_with_either_lookup(fmt):
    from int4ref.formats import quantize_groups

    groups = np.random.default_rng(1).standard_normal((500, 64)).astype(f32)
    groups[3] = 0
    clear = quantize_groups(groups, fmt)
    fast = quantize_groups(groups, fmt, nearest=_fast.nearest)
    assert np.array_equal(clear[0], fast[0]) and np.array_equal(clear[1], fast[1])
