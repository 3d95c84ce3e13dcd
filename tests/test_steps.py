"""Steps: one type for every length, parsed once."""

import pytest

from lth.core.errors import ConfigError
from lth.core.steps import Step


@pytest.mark.parametrize(
    ("text", "epochs", "iterations"),
    [("500it", 0, 500), ("2ep", 2, 0), ("2ep50it", 2, 50), (" 3ep 7it ", 3, 7), ("0it", 0, 0)],
)
def test_parse(text: str, epochs: int, iterations: int) -> None:
    step = Step.parse(text)
    assert (step.epochs, step.iterations) == (epochs, iterations)
    assert Step.parse(str(step)) == step


def test_to_iterations_uses_the_epoch_length() -> None:
    assert Step.parse("2ep50it").to_iterations(100) == 250
    assert Step.parse("500it").to_iterations(100) == 500


@pytest.mark.parametrize("bad", ["500", 500, "it", "2 epochs", "-1it", "1.5ep", "", None, "50it2ep"])
def test_bare_numbers_and_garbage_are_refused_naming_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^train\.steps: .*500it"):
        Step.parse(bad, key="train.steps")
