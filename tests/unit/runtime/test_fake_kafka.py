"""The fake clients speak confluent-kafka's API: every method a test relies on exists for real."""

from __future__ import annotations

import inspect

import pytest
from confluent_kafka import Consumer, Producer
from tests.unit.runtime.fake_kafka import FakeConsumer, FakeProducer

#: Helpers of the fakes that only tests call.
TEST_ONLY = {"committed_values", "revoke_all", "lose_all", "fetch_ahead"}


@pytest.mark.parametrize(("fake", "real"), [(FakeProducer, Producer), (FakeConsumer, Consumer)])
def test_every_method_of_a_fake_client_exists_on_the_real_one(fake: type, real: type) -> None:
    methods = {
        name for name, _ in inspect.getmembers(fake, inspect.isfunction) if not name.startswith("_")
    } - TEST_ONLY
    assert methods, "no methods found"
    assert sorted(name for name in methods if not hasattr(real, name)) == []
