"""Conditioner networks for coupling layers."""

from flowkit.nets.residual import ResidualBlock, ResidualConditioner

__all__ = ["ResidualBlock", "ResidualConditioner"]
