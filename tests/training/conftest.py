"""Fixtures of the launcher tests."""

import pytest
from kube_fake import FakeKube
from kubernetes import client


@pytest.fixture
def kube():
    """A fake API server and a client pointed at it."""
    fake = FakeKube()
    host = fake.serve()
    yield fake, client.ApiClient(client.Configuration(host=host))
    fake.server.shutdown()
