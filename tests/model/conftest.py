import pytest


@pytest.fixture
def loss_and_grads():
    """run(model, x): (loss, {name: grad}) of one forward/backward with x as input and target."""
    def run(model, x):
        model.zero_grad()
        loss = model(x, targets=x)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return run
