"""Verifiers shared by training and evaluation (strings in, [`VerifyResult`] out)."""

from .base import Verdict, Verifier, VerifyResult, completion_text, get_verifier, register_verifier

__all__ = ["Verdict", "Verifier", "VerifyResult", "completion_text", "get_verifier", "register_verifier"]
