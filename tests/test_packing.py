import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from int4ref.packing import pack_int32, pack_nibbles, unpack_int32, unpack_nibbles

ALL_BYTES = np.arange(256, dtype=np.uint8)


@pytest.mark.parametrize("layout", ["bnb", "ggml"])
def test_every_byte_value_round_trips(layout):
    data = np.tile(ALL_BYTES, 2)  # 512 bytes = 1024 codes, a multiple of 32
    codes = unpack_nibbles(data, 1024, layout)
    assert codes.max() <= 15
    assert pack_nibbles(codes, layout).tobytes() == data.tobytes()


def test_bnb_layout_high_nibble_first_and_odd_padding():
    assert pack_nibbles([0x1, 0x2]).tolist() == [0x12]
    assert pack_nibbles([0xA, 0xB, 0xC]).tolist() == [0xAB, 0xC0]
    assert unpack_nibbles(np.array([0xAB, 0xC0], np.uint8), 3).tolist() == [0xA, 0xB, 0xC]


def test_ggml_layout_element_j_and_j_plus_16_share_a_byte():
    codes = np.arange(32) % 16
    codes[16:] = 15 - codes[:16]
    packed = pack_nibbles(codes, "ggml")
    for j in range(16):
        assert packed[j] & 0x0F == codes[j] and packed[j] >> 4 == codes[j + 16]


def test_int32_orders():
    assert pack_int32(np.arange(8), "sequential").view(np.uint32).tolist() == [0x76543210]
    assert pack_int32(np.arange(8), "awq").view(np.uint32).tolist() == [0x75316420]


@given(hnp.arrays(np.uint8, st.integers(1, 300), elements=st.integers(0, 15)))
def test_bnb_round_trip(codes):
    assert np.array_equal(unpack_nibbles(pack_nibbles(codes), codes.size), codes)


@given(st.integers(1, 8), st.integers(1, 6), st.sampled_from(["sequential", "awq"]), st.integers(0, 1), st.data())
def test_int32_round_trip(a, b, order, axis, data):
    shape = (8 * a, b) if axis == 0 else (b, 8 * a)
    codes = data.draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 15)))
    words = pack_int32(codes, order, axis)
    assert words.dtype == np.int32 and words.shape[axis] == shape[axis] // 8
    assert np.array_equal(unpack_int32(words, order, axis), codes)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: pack_nibbles([0, 16]), ValueError, "out of range"),
        (lambda: pack_nibbles([-1, 3]), ValueError, "out of range"),
        (lambda: pack_nibbles([0.5]), TypeError, "integer"),
        (lambda: pack_nibbles(np.zeros(31, np.uint8), "ggml"), ValueError, "multiple of 32"),
        (lambda: pack_nibbles([1], "nibble"), ValueError, "unknown nibble layout"),
        (lambda: unpack_nibbles(np.zeros(3, np.uint8), 8), ValueError, "3 bytes; expected 4"),
        (lambda: unpack_nibbles(np.zeros(4, np.int8), 8), TypeError, "uint8"),
        (lambda: pack_int32(np.zeros(7, np.uint8)), ValueError, "multiple of 8"),
        (lambda: pack_int32(np.zeros(8, np.uint8), "gptq-v2"), ValueError, "unknown int32 order"),
        (lambda: unpack_int32(np.zeros(2, np.float32)), TypeError, "int32"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
