import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from agnostic_saliency import InputAgnosticSaliency, InputError, SaliencyResult
from agnostic_saliency.method.project import rms
from agnostic_saliency.method.settings import Nudging
from agnostic_saliency.models.running import channels_last
from agnostic_saliency.models.spec import InputSpec

NAMES = ["zero", "one", "two", "three"]
FAST = dict(steps=3, batch_size=4, refine_steps=2, eval_samples=16, progress=False)


def model_state(model):
    return (
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        {name: p.detach().clone() for name, p in model.named_parameters()},
        {name: b.detach().clone() for name, b in model.named_buffers()},
    )


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_full_backward_hooks", {}) or {}) for m in model.modules())


def mixed_model(TinyConv):
    torch.manual_seed(0)
    model = TinyConv()
    model.train()
    model.features[1].eval()  # a module left in eval mode inside a training model
    model.head.weight.requires_grad_(False)
    return model


def assert_same_state(model, state):
    training, grads, params, buffers = model_state(model)
    assert training == state[0]
    assert grads == state[1]
    for name in params:
        assert torch.equal(params[name], state[2][name]), name
    for name in buffers:  # batch-norm running statistics untouched
        assert torch.equal(buffers[name], state[3][name]), name
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_model_comes_back_as_given(tiny_spec, tiny_conv_class):
    model = mixed_model(tiny_conv_class)
    state = model_state(model)
    explainer = InputAgnosticSaliency(model, tiny_spec, NAMES)
    assert_same_state(model, state)
    result = explainer.attribute([0, 2], **FAST)
    assert isinstance(result, SaliencyResult)
    assert_same_state(model, state)


def test_model_comes_back_as_given_on_error(tiny_spec, tiny_conv_class):
    model = mixed_model(tiny_conv_class)
    state = model_state(model)
    calls = []

    def failing(n, generator):
        calls.append(n)
        if len(calls) > 2:
            return torch.zeros(n + 1, 1, 8, 8)  # a wrong shape, mid-run
        return torch.rand(n, 1, 8, 8, generator=generator)

    explainer = InputAgnosticSaliency(model, tiny_spec, NAMES)
    with pytest.raises(InputError):
        explainer.attribute([1], distribution=failing, **FAST)
    assert len(calls) > 2
    assert_same_state(model, state)

    class Boom(RuntimeError):
        pass

    def exploding(n, generator):
        raise Boom("no samples")

    with pytest.raises(Boom):
        explainer.attribute([1], distribution=exploding, **FAST)
    assert_same_state(model, state)


def test_seed_reproducible_and_different(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    a = explainer.attribute([0, 3], seed=7, **FAST)
    b = explainer.attribute([0, 3], seed=7, **FAST)
    c = explainer.attribute([0, 3], seed=8, **FAST)
    assert torch.equal(a.maps, b.maps)
    assert torch.equal(a.unrefined_maps, b.unrefined_maps)
    assert a.fidelity == b.fidelity
    assert not torch.equal(a.maps, c.maps)


def test_memory_cap_chunking_gives_the_same_maps(tiny_model, tiny_spec, monkeypatch):
    model = tiny_model
    whole = InputAgnosticSaliency(model, tiny_spec, NAMES)
    one_sample = int(1.5 * whole.sample_bytes)  # activations for one sample per chunk
    assert len(whole._chunks(3, 4, 2**30)) == 1
    assert len(whole._chunks(3, 4, one_sample)) == 12
    chunked = InputAgnosticSaliency(model, tiny_spec, NAMES)
    monkeypatch.setattr(chunked, "_plan_memory", lambda *args: (3, one_sample))
    a = whole.attribute([0, 1, 2], **FAST)
    b = chunked.attribute([0, 1, 2], **FAST)
    torch.testing.assert_close(a.unrefined_maps, b.unrefined_maps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)
    assert a.sample_gradients == b.sample_gradients


def test_a_cpu_pass_holds_at_most_the_cpu_pass_bytes_however_large_the_cap(tiny_model, tiny_spec, monkeypatch):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    limit = 5 * explainer.sample_bytes  # five inputs a pass
    monkeypatch.setattr(explainer, "CPU_PASS_BYTES", limit)
    chunks = explainer._chunks(4, 3, 2**40)
    assert [(m.stop - m.start) * (s.stop - s.start) for m, s in chunks] == [3, 3, 3, 3]
    monkeypatch.setattr(explainer, "CPU_PASS_BYTES", None)
    assert len(explainer._chunks(4, 3, 2**40)) == 1


def _cap_for_chunks_of(explainer, maps_per_chunk: int, num_maps: int, batch_size: int, eval_samples: int) -> float:
    """A memory cap (MiB) under which ``num_maps`` maps stream in chunks of ``maps_per_chunk``."""
    map_bytes = explainer.spec.numel * 4
    fixed = (explainer.RESULT_COPIES * num_maps + eval_samples + batch_size) * map_bytes
    state = explainer.STATE_COPIES * map_bytes
    return (fixed + explainer.sample_bytes + 2 * maps_per_chunk * state + state // 2) / 2**20


def test_classes_stream_in_chunks_when_their_state_exceeds_the_cap(tiny_model, tiny_spec):
    from agnostic_saliency.distributed import attribute_in_chunks
    from agnostic_saliency.executors import LocalExecutor
    from agnostic_saliency.models import LoadedModel

    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    cap = _cap_for_chunks_of(explainer, 2, 4, FAST["batch_size"], FAST["eval_samples"])
    assert cap * 2**20 > explainer.STATE_COPIES * 64 * 4 * 4  # the maps' whole state would fit in the cap...
    streaming = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES, memory_cap_mb=cap)
    assert streaming._plan_memory(4, FAST["batch_size"], FAST["eval_samples"], None)[0] == 2  # ...but not in half
    streamed = streaming.attribute("all", seed=3, **FAST)
    assert streamed.maps.shape == (4, 1, 8, 8) and streamed.config["classes_per_chunk"] == 2
    assert len(streamed.fidelity.fooling_rate) == 4 and streamed.concepts == [[0], [1], [2], [3]]
    # the same as two tasks of two classes each, at the chunks' own seeds
    loaded = LoadedModel(tiny_model, "tiny", tiny_spec, NAMES)
    settings = {k: v for k, v in FAST.items() if k != "progress"}
    tasks = attribute_in_chunks(loaded, "all", LocalExecutor(), 2, seed=3, progress=False, **settings)
    torch.testing.assert_close(streamed.maps, tasks.maps)
    torch.testing.assert_close(streamed.displayed, tasks.displayed)
    assert streamed.config["chunk_seeds"] == tasks.config["chunk_seeds"]
    assert streamed.sample_gradients == tasks.sample_gradients


def test_a_cap_too_small_for_the_maps_is_a_one_line_error(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES, memory_cap_mb=0.01)
    with pytest.raises(InputError, match="cannot hold 4 maps of shape 1,8,8"):
        explainer.attribute("all", **FAST)


def test_early_stopping_stops_done_maps_and_reports_their_steps(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    settings = dict(FAST, steps=60, refine_steps=0)
    full = explainer.attribute("all", **settings)
    stopped = explainer.attribute("all", early_stop=True, stop_target=0.5, stop_window=5, **settings)
    assert full.nudge_steps == [60] * 4
    # a map stops at a multiple of the check interval, once its streak reached the window
    assert all(s % 10 == 0 and 10 <= s <= 60 for s in stopped.nudge_steps)
    assert any(s < 60 for s in stopped.nudge_steps)
    assert stopped.sample_gradients == sum(stopped.nudge_steps) * FAST["batch_size"] < full.sample_gradients
    assert [row["nudge_steps"] for row in stopped.per_class()] == stopped.nudge_steps
    # while no map has stopped, the loop is the one without early stopping, bit for bit
    never = explainer.attribute("all", early_stop=True, stop_target=1.0, stop_window=1000, **settings)
    torch.testing.assert_close(never.maps, full.maps, rtol=0, atol=0)


def test_memory_cap_must_be_positive(tiny_model, tiny_spec):
    with pytest.raises(InputError):
        InputAgnosticSaliency(tiny_model, tiny_spec, memory_cap_mb=0)


@pytest.mark.parametrize("norm,budget", [("l2", 0.05), ("l2", 0.3), ("linf", 0.04)])
def test_budget_holds(tiny_model, norm, budget):
    spec = InputSpec((1, 8, 8), value_range=(-1.0, 1.0))  # span 2
    explainer = InputAgnosticSaliency(tiny_model, spec, NAMES)
    result = explainer.attribute("all", norm=norm, budget=budget, step_size=0.2, **FAST)
    assert result.maps.shape == (4, 1, 8, 8)
    for maps in (result.maps, result.unrefined_maps):
        if norm == "l2":
            assert torch.all(rms(maps) <= budget * 2 * (1 + 1e-4))
        else:
            assert float(maps.abs().max()) <= budget * 2 * (1 + 1e-5)
    # The step is big enough that the budget binds: maps reach the boundary.
    if norm == "l2":
        assert float(rms(result.unrefined_maps).max()) > 0.9 * budget * 2
    # Displayed maps (default: the positive part) lie in the pixel range, each reaching its top,
    # and are the range's low value exactly where the map is not positive.
    assert result.displayed.min() >= -1 and result.displayed.max() <= 1
    torch.testing.assert_close(result.displayed.flatten(1).amax(1), torch.full((4,), 1.0))
    assert torch.equal(result.displayed == -1, result.maps <= 0)


class CountingModel(nn.Module):
    """Counts the samples that go through a forward pass with gradients on."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.with_grad = 0

    def forward(self, x):
        if torch.is_grad_enabled():
            self.with_grad += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("refine,memory_cap", [(True, 2048), (False, 2048), (True, "one map per chunk")])
def test_sample_gradients_counted(tiny_model, tiny_spec, refine, memory_cap):
    model = CountingModel(tiny_model)
    if memory_cap == "one map per chunk":  # the maps stream, one at a time, with one sample per pass
        memory_cap = _cap_for_chunks_of(InputAgnosticSaliency(model, tiny_spec, NAMES), 1, 3, 4, 16)
    explainer = InputAgnosticSaliency(model, tiny_spec, NAMES, memory_cap_mb=memory_cap)
    model.with_grad = 0
    result = explainer.attribute([0, 1, "two"], refine=refine, **FAST)
    assert result.sample_gradients == model.with_grad
    assert result.sample_gradients > 0
    assert result.seconds > 0


def test_targets(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    assert explainer.num_classes == 4
    assert explainer.resolve_targets("all") == [[0], [1], [2], [3]]
    assert explainer.resolve_targets(None) == [[0], [1], [2], [3]]
    assert explainer.resolve_targets(2) == [[2]]
    assert explainer.resolve_targets("three") == [[3]]
    assert explainer.resolve_targets("THREE") == [[3]]
    assert explainer.resolve_targets("1,two") == [[1], [2]]
    assert explainer.resolve_targets("two+0") == [[0, 2]]
    assert explainer.resolve_targets([3, "one+zero", [1, 2]]) == [[3], [0, 1], [1, 2]]
    for bad in ["four", "4", -1, [7], ",", "one+nine"]:
        with pytest.raises(InputError):
            explainer.resolve_targets(bad)
    with pytest.raises(InputError, match="unknown class name"):
        explainer.attribute("seven", **FAST)


def test_result_order_and_names(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    result = explainer.attribute("three,zero+one", **FAST)
    assert result.concepts == [[3], [0, 1]]
    assert result.names == ["three", "zero+one"]
    rows = result.per_class(NAMES)
    assert [r["index"] for r in rows] == [3, [0, 1]]
    assert len(result.fidelity.fooling_rate) == 2
    assert result.config["seed"] == 0 and result.config["steps"] == 3


def test_class_names_must_match(tiny_model, tiny_spec):
    with pytest.raises(InputError):
        InputAgnosticSaliency(tiny_model, tiny_spec, ["a", "b"])
    default = InputAgnosticSaliency(tiny_model, tiny_spec)
    assert default.class_names == ["0", "1", "2", "3"]


def test_bad_settings(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    for bad in [dict(steps=-1), dict(batch_size=0), dict(norm="l3"), dict(budget=0.0),
                dict(real_images=torch.zeros(2, 3, 8, 8)), dict(distribution="nosuch")]:
        with pytest.raises(InputError):
            explainer.attribute([0], **{**FAST, **bad})


def test_wrong_output_shape_rejected(tiny_spec):
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(InputError, match="N, classes"):
        InputAgnosticSaliency(Spatial(), tiny_spec)


def test_refinement_tolerance(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec, NAMES)
    strict = explainer.attribute([0, 1], refine_tolerance=-1.0, **FAST)  # nothing can gain > 1
    assert strict.refined == [False, False]
    assert torch.equal(strict.maps, strict.unrefined_maps)
    assert strict.fidelity == strict.fidelity_unrefined
    loose = explainer.attribute([0, 1], refine_tolerance=1.0, **FAST)  # nothing can lose > 1
    assert loose.refined == [True, True]
    assert not torch.equal(loose.maps, loose.unrefined_maps)
    off = explainer.attribute([0, 1], refine=False, **FAST)
    assert off.refined == [False, False]
    assert torch.equal(off.maps, off.unrefined_maps)


def brightness_model(seed=0):
    """A small conv net trained to answer class 3 for bright images, and 0, 1 or 2 otherwise
    (by which third of the image is brightest)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 4),
    )
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def batch(n):
        base = 0.45 * torch.rand(n, 1, 1, 1, generator=generator)
        x = base + 0.1 * torch.rand(n, 1, 8, 8, generator=generator)
        y = torch.randint(0, 3, (n,), generator=generator)
        for c in range(3):
            rows = slice(3 * c, 3 * c + 2)
            x[y == c, :, rows] += 0.3
        bright = torch.rand(n, generator=generator) < 0.3
        x[bright] = x[bright] + 0.45
        y[bright] = 3
        return x.clamp(0, 1), y

    for _ in range(300):
        x, y = batch(64)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    x, y = batch(500)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean()
    assert accuracy > 0.9, f"the toy model did not learn ({accuracy:.2f})"
    return model.eval()


def test_map_fools_a_model_that_reads_brightness():
    model = brightness_model()
    spec = InputSpec((1, 8, 8))
    explainer = InputAgnosticSaliency(model, spec, NAMES)
    dark = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.4
    with torch.no_grad():
        assert (model(dark).argmax(1) == 3).float().mean() < 0.2
    result = explainer.attribute([3], distribution="uniform-flat", budget=0.4, steps=40, batch_size=16,
                                 step_size=0.05, refine_steps=5, eval_samples=64, real_images=dark,
                                 progress=False)
    assert result.fidelity.fooling_rate[0] > 0.9
    assert result.fidelity.real_fooling_rate[0] > 0.9
    assert result.fidelity.target_confidence[0] > 0.7
    # The map brightens the image: that is the feature the model attributes to class 3.
    assert float(result.maps[0].mean()) > 0.1
    with torch.no_grad():
        fooled = model((dark + result.maps).clamp(0, 1)).argmax(1)
    assert float((fooled == 3).float().mean()) == pytest.approx(result.fidelity.real_fooling_rate[0])


@pytest.mark.parametrize("mode", ["shape", "blur"])
def test_both_refinement_modes_report_fidelity_and_respect_the_budget(tiny_model, tiny_spec, mode):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec)
    budget = 0.1
    result = explainer.attribute([0, 1], refine_mode=mode, budget=budget, **FAST)
    assert result.config["refine_mode"] == mode
    limit = budget * tiny_spec.span * tiny_spec.numel ** 0.5
    assert float(result.maps.flatten(1).norm(dim=1).max()) <= limit * (1 + 1e-5)
    assert len(result.fidelity.fooling_rate) == 2 and len(result.refined) == 2


def test_the_refinement_preconditions_its_detail_with_its_own_decay(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec)
    run = dict(FAST, targets=[0, 1], frequency_decay=1.0, refine_tolerance=1.0)  # keep every refinement
    free = explainer.attribute(refine_frequency_decay=0.0, **run)
    smooth = explainer.attribute(refine_frequency_decay=1.0, **run)
    assert torch.equal(free.unrefined_maps, smooth.unrefined_maps)  # the nudge is the same
    assert not torch.allclose(free.maps, smooth.maps)  # only the refinement's detail moves differently
    assert free.config["refine_frequency_decay"] == 0.0 and free.config["frequency_decay"] == 1.0


def test_the_readable_preset_applies_under_the_keywords(tiny_model, tiny_spec):
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec)
    readable = explainer.attribute([0], preset="readable", **FAST)
    assert readable.config["distribution"] == "dark2+shapes" and readable.config["frequency_decay"] == 1.0
    mine = explainer.attribute([0], preset="readable", distribution="uniform", **FAST)
    assert mine.config["distribution"] == "uniform" and mine.config["frequency_decay"] == 1.0
    with pytest.raises(InputError, match="unknown preset"):
        explainer.attribute([0], preset="pretty", **FAST)


def test_init_maps_resume_where_a_run_left_off(tiny_spec, tiny_conv_class):
    torch.manual_seed(0)
    explainer = InputAgnosticSaliency(tiny_conv_class(), tiny_spec, NAMES)
    first = explainer.attribute([1, 3], refine=False, **{**FAST, "steps": 5})
    # steps=0 and no refinement: the given maps come back as they were, only measured
    again = explainer.attribute([1, 3], init_maps=first.maps, refine=False, **{**FAST, "steps": 0})
    assert torch.allclose(again.maps, first.maps)
    assert again.fidelity.fooling_rate == pytest.approx(first.fidelity.fooling_rate)
    resumed = explainer.attribute([1, 3], init_maps=first.maps, refine=False, **FAST)
    assert not torch.allclose(resumed.maps, first.maps)


def test_init_maps_of_the_wrong_shape_is_an_input_error(tiny_spec, tiny_conv_class):
    explainer = InputAgnosticSaliency(tiny_conv_class(), tiny_spec, NAMES)
    with pytest.raises(InputError, match="init_maps must be"):
        explainer.attribute([1, 3], init_maps=torch.zeros(3, *tiny_spec.shape), **FAST)


def test_channels_last_reorders_conv_weights_and_gives_back_the_callers_storage():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 3), nn.Flatten())
    weights = [p for p in model.parameters() if p.dim() == 4]
    before = [(w.data_ptr(), w.stride()) for w in weights]
    x = torch.rand(2, 1, 6, 6)
    expected = model(x)
    with channels_last(model):
        # the one-channel weight too, whose is_contiguous() test passes in either layout
        assert all(w.stride()[1] == 1 for w in weights)
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert [(w.data_ptr(), w.stride()) for w in weights] == before
    with pytest.raises(RuntimeError), channels_last(model):
        raise RuntimeError("interrupted")
    assert [(w.data_ptr(), w.stride()) for w in weights] == before
    with channels_last(model, enabled=False):
        assert [(w.data_ptr(), w.stride()) for w in weights] == before


def test_precision_bf16_runs_the_nudge_in_bf16(tiny_model, tiny_spec):
    seen = set()
    hook = tiny_model.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    explainer = InputAgnosticSaliency(tiny_model, tiny_spec)
    named = explainer.attribute(targets=[0, 1], precision="bf16", seed=2, **FAST)
    hook.remove()
    assert torch.bfloat16 in seen and named.config["precision"] == "bf16"
    grouped = explainer.attribute([0, 1], nudging=Nudging(precision="bf16", steps=FAST["steps"]), seed=2,
                                  **{k: v for k, v in FAST.items() if k != "steps"})
    assert torch.equal(named.maps, grouped.maps)
    full = explainer.attribute(targets=[0, 1], seed=2, **FAST)
    assert full.config["precision"] == "fp32" and not torch.equal(full.maps, named.maps)
    with pytest.raises(InputError, match="CUDA"):
        explainer.attribute(targets=[0], precision="fp16", **FAST)


def test_display_choice_sets_the_picture_and_bad_names_are_input_errors(tiny_model, tiny_spec):
    from agnostic_saliency.errors import InputError
    from agnostic_saliency.method.scale import minmax

    explainer = InputAgnosticSaliency(tiny_model, tiny_spec)
    result = explainer.attribute(targets=[0], display="minmax", **FAST)
    torch.testing.assert_close(result.displayed, minmax(result.maps))
    assert result.config["display"] == "minmax"
    with pytest.raises(InputError, match="unknown display"):
        explainer.attribute(targets=[0], display="rainbow", **FAST)


@settings(max_examples=8, deadline=None)
@given(samples_per_chunk=st.integers(1, 12), batch_size=st.integers(2, 8), seed=st.integers(0, 1000))
def test_results_do_not_depend_on_how_the_memory_cap_splits_the_work(samples_per_chunk, batch_size, seed):
    """Any activation budget, splitting the maps and samples into chunks of any size, gives the
    maps of one pass up to float rounding (sums in another order): within 1e-4 of the maps'
    largest value."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 4)).eval()
    whole = InputAgnosticSaliency(model, InputSpec((1, 8, 8)), NAMES)
    split = InputAgnosticSaliency(model, InputSpec((1, 8, 8)), NAMES)
    split._plan_memory = lambda num_maps, *rest: (num_maps, split.sample_bytes * samples_per_chunk)
    run = dict(FAST, batch_size=batch_size, seed=seed)
    expected, got = whole.attribute(**run), split.attribute(**run)
    scale = float(expected.maps.abs().max())
    torch.testing.assert_close(got.unrefined_maps, expected.unrefined_maps, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(got.maps, expected.maps, rtol=0, atol=1e-4 * scale)
    assert got.sample_gradients == expected.sample_gradients


def test_a_model_whose_output_ignores_its_input_gets_a_warning(tiny_model, tiny_spec):
    head = nn.Linear(tiny_spec.numel, len(NAMES))
    nn.init.zeros_(head.weight)  # a zero-initialised head: every input gradient is zero
    flat = nn.Sequential(nn.Flatten(), head)
    with pytest.warns(UserWarning, match="some maps are zero"):
        result = InputAgnosticSaliency(flat, tiny_spec, NAMES).attribute(targets="all", **FAST)
    assert float(result.maps.abs().max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model that reads its input gives no such warning
        InputAgnosticSaliency(tiny_model, tiny_spec, NAMES).attribute(targets="all", **FAST)
