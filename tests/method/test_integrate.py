import torch

from agnostic_saliency.method.integrate import MomentIntegrator


def test_first_step_has_step_size_and_opposite_sign():
    gradient = torch.tensor([3.0, -0.002, 50.0, -7.0])
    step = MomentIntegrator(step_size=0.01).step(gradient, span=2.0)
    # After bias correction the first step is step_size * span per pixel, whatever the scale.
    torch.testing.assert_close(step, -0.02 * gradient.sign(), rtol=1e-4, atol=1e-7)


def test_step_is_scale_invariant():
    torch.manual_seed(0)
    gradients = [torch.randn(10) for _ in range(5)]
    a, b = MomentIntegrator(0.05), MomentIntegrator(0.05)
    for g in gradients:
        torch.testing.assert_close(a.step(g), b.step(1000 * g), rtol=1e-4, atol=1e-7)


def test_constant_gradient_keeps_step_size():
    integrator = MomentIntegrator(step_size=0.1)
    for _ in range(20):
        step = integrator.step(torch.full((3,), 4.0))
    torch.testing.assert_close(step, torch.full((3,), -0.1), rtol=1e-3, atol=1e-6)
    assert integrator.state_dict()["count"] == 20


def test_noisy_gradient_is_integrated():
    """A pixel whose gradient sign flips every step moves less than one with a steady sign."""
    integrator = MomentIntegrator(step_size=0.1)
    total = torch.zeros(2)
    for i in range(30):
        total += integrator.step(torch.tensor([1.0, 1.0 if i % 2 else -1.0]))
    assert total[0] < -2.5
    assert abs(total[1]) < 0.5


def test_descends_a_quadratic():
    target = torch.tensor([0.3, -0.2, 0.05])
    x = torch.zeros(3)
    integrator = MomentIntegrator(step_size=0.02)
    for _ in range(300):
        x = x + integrator.step(2 * (x - target))
    torch.testing.assert_close(x, target, atol=0.02, rtol=0)


def test_state_dict_holds_moments():
    integrator = MomentIntegrator()
    assert integrator.state_dict()["first"] is None
    integrator.step(torch.ones(2))
    state = integrator.state_dict()
    assert state["count"] == 1 and state["first"].shape == (2,) and state["second"].shape == (2,)


def test_total_variation_pull_is_relative_and_flattens_stripes():
    from agnostic_saliency.method.integrate import total_variation_gradient, with_total_variation

    stripes = torch.zeros(1, 1, 12, 12)
    stripes[..., ::2, :] = 1.0
    flat = torch.zeros(1, 1, 12, 12)
    flat[..., 3:9, 3:9] = 1.0
    # Stripes carry far more variation than a block of the same energy ...
    assert total_variation_gradient(stripes).abs().sum() > 3 * total_variation_gradient(flat).abs().sum()
    # ... and a descent step along the pull makes the stripes flatter.
    step = stripes - 0.05 * total_variation_gradient(stripes)
    assert (step[..., 1:, :] - step[..., :-1, :]).abs().sum() < (stripes[..., 1:, :] - stripes[..., :-1, :]).abs().sum()
    # The pull is weight times the loss gradient's norm, whatever that norm is; weight 0 adds nothing.
    for scale in (1e-3, 1e3):
        loss = scale * torch.randn(2, 1, 12, 12)
        maps = torch.cat([stripes, flat])
        added = with_total_variation(loss, maps, 0.5) - loss
        torch.testing.assert_close(added.flatten(1).norm(dim=1), 0.5 * loss.flatten(1).norm(dim=1))
        assert with_total_variation(loss, maps, 0.0) is loss
