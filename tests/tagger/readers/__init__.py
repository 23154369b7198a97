"""Tests for tagger.readers."""
