import pytest


@pytest.fixture
def loss_and_grads_switched():
    """run(model, x, flag): [(loss, {name: grad}) of one forward/backward on x (input and target) with
    the blocks' flag off, then on]; flag names a block attribute such as "self_attn.rope_kernel"."""
    def loss_and_grads(model, x):
        model.zero_grad()
        loss = model(x, targets=x)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def run(model, x, flag):
        part, name = flag.split(".")
        runs = []
        for on in (False, True):
            for block in model.model.layers:
                assert hasattr(getattr(block, part), name), flag  # a misspelt flag would compare a run with itself
                setattr(getattr(block, part), name, on)
            runs.append(loss_and_grads(model, x))
        return runs
    return run
