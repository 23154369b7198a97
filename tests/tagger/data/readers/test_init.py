"""Tests for tagger/readers/__init__.py: the format -> reader table."""

from __future__ import annotations

import inspect

import pytest

from tagger.data.readers import READERS, get_reader, read_voc


def test_every_reader_is_a_read_function_returning_a_source_table() -> None:
    for format_name, reader in READERS.items():
        assert reader.__name__.startswith("read_"), format_name
        assert inspect.signature(reader).return_annotation == "SourceTable"
        assert "name" in inspect.signature(reader).parameters


def test_get_reader_lists_known_formats() -> None:
    assert get_reader("voc") is read_voc
    with pytest.raises(ValueError, match=r"unknown source format 'vox'; known: \['ade20k'"):
        get_reader("vox")
