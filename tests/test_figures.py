"""int4ref.explore.figures: the GPTQ column-sweep picture replays gptq_quantize faithfully, draws, and
its alt text names what it shows."""
import numpy as np
import pytest

import int4ref
from int4ref.explore import figures, viz

N_OUT, N_IN = 16, 24


def toy(seed=0):
    """The chapter's toy layer: a (16, 24) float32 weight and 256 rows of correlated inputs."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N_OUT, N_IN)).astype(np.float32)
    x = (rng.standard_normal((256, N_IN)) @ (np.eye(N_IN) + 0.6 * rng.standard_normal((N_IN, N_IN))))
    return w, x.astype(np.float32)


@pytest.mark.parametrize("format, group_size, block_size", [
    ("nf4", 8, 8), ("int4_asym", 8, 8), ("int4_sym", 12, 8),
    ("int4_asym", 8, 5),     # groups that start inside a block: fitted on the block's starting values
    ("nf4", 24, 7),          # one group per row, a last block shorter than the others
])
def test_replay_matches_gptq_quantize(format, group_size, block_size):
    w, x = toy()
    ref = int4ref.gptq_quantize(w, x, format=format, group_size=group_size, block_size=block_size)
    for step in (0, block_size - 1, block_size, N_IN - 1):
        state = figures.gptq_sweep(w, x, step=step, format=format, group_size=group_size, block_size=block_size)
        np.testing.assert_array_equal(state.codes, ref.qt.codes)
        # the quantized columns hold their final dequantized values
        np.testing.assert_array_equal(state.weights[:, :step].astype(np.float32), ref.dequantize()[:, :step])
        assert state.fed_error.shape == (N_OUT, step)
        b0, b1 = state.block
        assert b0 <= step < b1 and b0 % block_size == 0 and b1 == min(b0 + block_size, N_IN)


def test_pending_is_what_the_lazy_batch_still_owes():
    """Lazy blocks of 8 plus the pending change equal the eager sweep (one block of 24) at the
    same step, up to float rounding. One group per row, so the group fit does not depend on
    the block size."""
    w, x = toy(1)
    for step in (3, 11):
        lazy = figures.gptq_sweep(w, x, step=step, group_size=N_IN, block_size=8)
        eager = figures.gptq_sweep(w, x, step=step, group_size=N_IN, block_size=N_IN)
        b1 = lazy.block[1]
        assert np.all(lazy.pending[:, :b1] == 0)
        assert np.abs(lazy.pending[:, b1:]).max() > 1e-3          # columns step % 8 > 0 owe something
        np.testing.assert_allclose(lazy.weights + lazy.pending, eager.weights, rtol=0, atol=1e-9)
        assert np.abs(lazy.weights - eager.weights)[:, b1:].max() > 1e-3   # ... and the lazy matrix lacks it
        assert np.all(np.isnan(lazy.updated[:, :step])) and not np.any(np.isnan(lazy.updated[:, step:]))
    for step in (8, 19):   # nothing owed at a block's start, nor in the last block
        assert np.all(figures.gptq_sweep(w, x, step=step, group_size=N_IN, block_size=8).pending == 0)


def test_figure_draws_and_its_alt_text_names_what_it_shows():
    w, x = toy()
    state = figures.gptq_sweep(w, x, step=11, format="nf4", group_size=8, block_size=8)
    fig = figures.gptq_sweep_figure(state)
    png = viz.to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert len(fig.axes) == 5                                  # three heat maps and two colour bars
    images = [ax.images[0].get_array() for ax in fig.axes[:3]]
    np.testing.assert_array_equal(images[0], state.weights)
    np.testing.assert_array_equal(images[2], state.pending)

    alt = viz.alt_text(fig)
    assert alt == figures.gptq_sweep_alt(state)
    assert "16 by 24" in alt and "nf4" in alt and "groups of 8" in alt and "lazy blocks of 8" in alt
    assert "current block, columns 8 to 15" in alt and "current column, 11" in alt
    assert "columns 0 to 10, already quantized" in alt and "hatched" in alt
    assert f"up to {np.abs(state.pending[:, 16:]).max():.2f} in columns 16 to 23" in alt
    assert f"by up to {np.nanmax(np.abs(state.updated[:, 12:16])):.2f}" in alt
    assert 'alt="Three heat maps' in viz.show(fig)._repr_html_()


def test_alt_text_at_the_edges():
    w, x = toy()
    first_state = figures.gptq_sweep(w, x, step=0)
    first = figures.gptq_sweep_alt(first_state)
    assert "no column is quantized yet" in first and "hatched" not in first
    assert viz.alt_text(figures.gptq_sweep_figure(first_state)) == first     # nothing to show yet still draws
    last = figures.gptq_sweep_alt(figures.gptq_sweep(w, x, step=N_IN - 1))
    assert "columns 0 to 22, already quantized" in last and "this is the last block" in last


def test_bad_input_is_refused():
    w, x = toy()
    with pytest.raises(ValueError, match="step must be a column index in 0..23"):
        figures.gptq_sweep(w, x, step=24)
    with pytest.raises(ValueError, match="step"):
        figures.gptq_sweep(w, x, step=True)
    with pytest.raises(ValueError, match="group_size must be an integer"):
        figures.gptq_sweep(w, x, step=1, group_size="row")
    with pytest.raises(ValueError, match="does not divide"):
        figures.gptq_sweep(w, x, step=1, group_size=7)
    x_dead = x.copy()
    x_dead[:, 5] = 0
    with pytest.raises(ValueError, match="dead column"):
        figures.gptq_sweep(w, x_dead, step=1)


def test_a_replay_that_drifts_from_gptq_quantize_is_caught(monkeypatch):
    w, x = toy()
    real = figures.gptq_quantize

    def off_by_one(*args, **kwargs):
        result = real(*args, **kwargs)
        result.qt.codes[0, 0] ^= 1
        return result

    monkeypatch.setattr(figures, "gptq_quantize", off_by_one)
    with pytest.raises(RuntimeError, match="differs from gptq_quantize in 1 codes"):
        figures.gptq_sweep(w, x, step=3)


# --- Q4_K's search for a sub-block's scale and min (the superblocks chapter) ----------------

def gaussian_super_block(seed):
    """256 float32 values like a weight row: Gaussian, scale 0.05, one outlier per block."""
    rng = np.random.default_rng(seed)
    x = (0.05 * rng.standard_normal(256)).astype(np.float32)
    x[rng.integers(256)] *= 6
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_q4_k_search_keeps_the_least_error_and_int4refs_codes(seed, with_imatrix):
    from int4ref.interop import gguf

    x = gaussian_super_block(seed)
    imatrix = np.random.default_rng(seed + 10).random(256).astype(np.float32) if with_imatrix else None
    for j in range(8):
        search = figures.q4_k_search(x, j, imatrix)
        assert len(search.steps) == (37 if with_imatrix else 21) == search.errors.shape[0]
        with_start = np.concatenate([[search.start_error], search.errors])
        assert search.chosen == int(np.nanargmin(with_start)) - 1       # the first least error, start included
        assert search.best_error == np.nanmin(with_start)
        if search.chosen >= 0:
            k = search.chosen
            assert (search.scale, search.min) == (search.scales[k], search.mins[k])
            np.testing.assert_array_equal(search.best_codes, search.codes[k])
        stored, probe = figures.q4_k_search_stored_codes(x, j, imatrix)
        if imatrix is None:    # a sub-block's own 32 values decide its search: the probe's search is the same
            np.testing.assert_array_equal(stored, search.best_codes)
        np.testing.assert_array_equal(stored, figures.q4_k_search(probe, j, imatrix).best_codes)
    if imatrix is None:        # the 6-bit scales int4ref stores are the replayed ones, rounded as ggml does
        searches = [figures.q4_k_search(x, j) for j in range(8)]
        d, dmin, sc, m = figures.q4_k_six_bit([s.scale for s in searches], [-s.min for s in searches])
        rec = gguf.quantize(x, "Q4_K").view(gguf.block_type("Q4_K").block_dtype)[0]
        stored_sc, stored_m = gguf.q4_k.unpack_scales_mins(rec["scales"][None])
        assert (d, dmin) == (rec["d"], rec["dmin"])
        np.testing.assert_array_equal(sc, stored_sc[0])
        np.testing.assert_array_equal(m, stored_m[0])


def test_q4_k_search_moves_the_scale_on_most_blocks():
    """Not a search that never moves: on Gaussian sub-blocks some candidate usually beats the start."""
    chosen = [figures.q4_k_search(gaussian_super_block(seed), j).chosen for seed in range(3) for j in range(8)]
    assert sum(c >= 0 for c in chosen) > len(chosen) // 2 and len(set(chosen)) > 3


def test_q4_k_search_figure_draws_the_search_and_its_alt_text_counts_the_candidates():
    search = figures.q4_k_search(gaussian_super_block(0), 0)
    assert search.chosen >= 0
    fig = figures.q4_k_search_figure(search, "a seeded Gaussian")
    png = viz.to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    x_drawn, y_drawn = fig.axes[0].lines[0].get_data()
    np.testing.assert_array_equal(x_drawn, search.steps)
    np.testing.assert_array_equal(y_drawn, search.errors)
    alt = viz.alt_text(fig)
    assert alt == figures.q4_k_search_alt(search, "a seeded Gaussian")
    assert "each of the 21 candidate scales" in alt and "(a seeded Gaussian)" in alt
    assert f"number {search.chosen + 1} at {search.steps[search.chosen]:.2f}" in alt
    assert f"error {search.start_error:.3g}" in alt
    imat = figures.q4_k_search(gaussian_super_block(0), 0, imatrix=np.ones(256, np.float32))
    assert "each of the 37 candidate scales" in figures.q4_k_search_alt(imat)


def test_q4_k_search_flat_and_bad_input(monkeypatch):
    from int4ref.interop import gguf

    flat = figures.q4_k_search(np.full(256, 0.5, np.float32), 3)     # min is set to 0, max 0.5: not flat
    assert flat.scale > 0
    zero = figures.q4_k_search(np.zeros(256, np.float32), 3)
    assert zero.scale == 0 and zero.chosen == -1 and not zero.best_codes.any()
    assert "No candidate beats the start" in figures.q4_k_search_alt(zero)
    assert "none has a fit" in figures.q4_k_search_alt(zero)
    assert not figures.q4_k_search_stored_codes(np.zeros(256, np.float32), 3)[0].any()
    x = gaussian_super_block(0)
    real = gguf.quantize
    monkeypatch.setattr(gguf, "quantize", lambda probe, *args, **kwargs: real(x, *args, **kwargs))  # no probe
    with pytest.raises(RuntimeError, match="stored 6-bit scale of [1-9]"):
        figures.q4_k_search_stored_codes(x, 0)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="sub_block must be an index in 0..7"):
        figures.q4_k_search(x, 8)
    with pytest.raises(ValueError, match="sub_block"):
        figures.q4_k_search(x, True)
    with pytest.raises(ValueError, match="shape \\(256,\\)"):
        figures.q4_k_search(x[:128], 0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        figures.q4_k_search(np.where(np.arange(256) == 5, np.inf, x), 0)
    with pytest.raises(ValueError, match="imatrix must hold 256 finite values >= 0"):
        figures.q4_k_search(x, 0, imatrix=-np.ones(256))
