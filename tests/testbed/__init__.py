"""Tests of the testbed stand-ins."""
