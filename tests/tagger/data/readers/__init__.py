"""Tests for tagger.data.readers."""
