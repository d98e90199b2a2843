"""Names every doctest in the flowkit package can use without importing them."""

from __future__ import annotations

import pytest
import torch

import flowkit


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["torch"] = torch
    doctest_namespace["flowkit"] = flowkit
    doctest_namespace["build_flow"] = flowkit.build_flow
    doctest_namespace["train"] = flowkit.train
    torch.manual_seed(0)
