"""Rollout backends behind one small protocol (see [`GenerationBackend`])."""

from .base import GenerationBackend, SamplingSettings, truncate_at_stop

__all__ = ["GenerationBackend", "SamplingSettings", "truncate_at_stop"]
