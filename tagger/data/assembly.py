"""Merge source tables into the manifest: source labels -> tags, known mask, content dedup.

Semantics (per source, then united over sources):
- positives: tags mapped from `value == 1` rows (provenance "mapped", or "human" for the
  internal vocabulary) plus all their taxonomy ancestors ("implied").
- known negatives: vocabulary policy "exhaustive" -> the mapping's `known_tags` for every image
  of the source; "exhaustive" and "verified" -> tags mapped from `value == 0` rows (non-partial
  entries); "none" -> nothing. A negative tag makes all its descendants negative (no animal =>
  no dog). `value == -1` rows make their tags, ancestors and descendants unknown for that image.
- positives win over negatives (conflicts are counted); known = positives + negatives.
- exact duplicates (same SHA-256) are one manifest row: tags and known united, provenance and
  boxes concatenated, `sources` lists every source. image_id = first 16 hex chars of the hash.

The label side is vectorised and bounded in memory: an (image, tag) pair is the int64 key
`image << bits | tag`, a set of pairs is a sorted unique key array, label rows are mapped in
chunks of `ROW_CHUNK`, ancestors/descendants come from padded lookup tables, and list columns
are built from offsets + dictionary codes (tag strings stay dictionary-encoded in memory;
`write_manifest` writes them as plain Parquet strings). 10M Open Images rows -> manifest in a
few seconds at < 3x the CSV's size: see bench/assemble_scale.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from label_system.mapping import SourceMapping
from label_system.taxonomy import Taxonomy
from tagger.data.images import ImageError, hash_file, load_reduced, probe_image
from tagger.data.manifest import MANIFEST_SCHEMA
from tagger.data.sources import Problem, SourceTable

NegativesPolicy = Literal["exhaustive", "verified", "none"]
VerifyMode = Literal["header", "decode"]
KIND_NAMES = ("human", "mapped", "implied")  # provenance kinds assembly writes
HUMAN, MAPPED, IMPLIED = 0, 1, 2
MAX_LISTED = 20  # problems listed per kind before summarising


@dataclass(frozen=True)
class SourceOverride:
    """What one source changes: mappings by vocabulary, the negatives policy, known tags."""

    mappings: Mapping[str, SourceMapping] = field(default_factory=dict)
    negatives: NegativesPolicy | None = None
    known_tags: frozenset[str] | None = None


@dataclass(frozen=True)
class ImageIdentity:
    """Content hash and displayed size of one readable image."""

    content_hash: str
    width: int
    height: int


@dataclass
class AssemblyResult:
    """The manifest, reported problems and counts.

    manifest: the columns of `MANIFEST_SCHEMA` (fold null); repeated strings dictionary-encoded
    (`manifest.cast(MANIFEST_SCHEMA)` gives the plain types; `write_manifest` takes either).
    """

    manifest: pa.Table
    problems: list[Problem]
    stats: dict[str, Any] = field(default_factory=dict)


# ---- images ------------------------------------------------------------------------------


def identify_image(path: str, verify: VerifyMode = "decode") -> ImageIdentity:
    """Hash a file and read its size; "decode" also decodes it (1/8 scale) to find truncation.

    Raises `tagger.data.images.ImageError`.
    """
    info = probe_image(path)
    if verify == "decode":
        load_reduced(path, 1)
    return ImageIdentity(hash_file(path), info.width, info.height)


def identify_images(
    paths: Sequence[str], *, workers: int = 2, verify: VerifyMode = "decode"
) -> list[ImageIdentity | ImageError]:
    """`identify_image` over `paths` in a thread pool; failures are returned, not raised."""

    def one(path: str) -> ImageIdentity | ImageError:
        try:
            return identify_image(path, verify)
        except ImageError as error:
            return error

    if workers <= 1 or len(paths) < 2:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))


@dataclass
class _Images:
    """All listed images of all sources (one row per (source, image_key)), then per unique."""

    source: np.ndarray  # int32 [R] source index
    key: np.ndarray  # object [R]
    path: np.ndarray  # object [R]
    mask_path: np.ndarray  # object [R] (None where absent)
    width: np.ndarray  # float64 [R] (nan unknown)
    height: np.ndarray  # float64 [R]
    offsets: np.ndarray  # int64 [S + 1]: rows of source s are offsets[s]:offsets[s+1]
    content_hash: np.ndarray  # object [R] ("" when not hashed)
    uid: np.ndarray  # int64 [R] unique image per row, -1 when left out
    first: np.ndarray  # int64 [U] first row of each unique image


def _collect_images(sources: Sequence[SourceTable], problems: list[Problem]) -> _Images:
    """Concatenate the images tables, dropping repeated keys within a source (reported)."""
    frames = []
    for s, src in enumerate(sources):
        images = src.images
        dup = images["image_key"].duplicated().to_numpy()
        if dup.any():
            for key in images["image_key"][dup].head(MAX_LISTED):
                problems.append(
                    Problem(src.name, "image_key listed twice; kept the first", image_key=str(key))
                )
            images = images[~dup]
        frame = pd.DataFrame({"source": np.full(len(images), s, dtype=np.int32)})
        frame["key"] = images["image_key"].astype(str).to_numpy(dtype=object)
        frame["path"] = images["path"].astype(str).to_numpy(dtype=object)
        frame["mask_path"] = (
            images["mask_path"].to_numpy(dtype=object) if "mask_path" in images else None
        )
        for dim in ("width", "height"):
            frame[dim] = (
                pd.to_numeric(images[dim], errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
                if dim in images
                else np.nan
            )
        frames.append(frame)
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            {"source": [], "key": [], "path": [], "mask_path": [], "width": [], "height": []}
        )
    )
    counts = [int((table["source"] == s).sum()) for s in range(len(sources))]
    r = len(table)
    return _Images(
        source=table["source"].to_numpy(dtype=np.int32),
        key=table["key"].to_numpy(dtype=object),
        path=table["path"].to_numpy(dtype=object),
        mask_path=table["mask_path"].to_numpy(dtype=object),
        width=table["width"].to_numpy(dtype=np.float64),
        height=table["height"].to_numpy(dtype=np.float64),
        offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
        content_hash=np.full(r, "", dtype=object),
        uid=np.arange(r, dtype=np.int64),
        first=np.arange(r, dtype=np.int64),
    )


def _identify(
    images: _Images, names: Sequence[str], workers: int, verify: VerifyMode, problems: list[Problem]
) -> None:
    """Hash and probe every image; unusable ones are reported and get uid -1; dedup by hash."""
    results = identify_images(list(images.path), workers=workers, verify=verify)
    ok = np.ones(len(results), dtype=bool)
    for i, result in enumerate(results):
        if isinstance(result, ImageError):
            ok[i] = False
            problems.append(
                Problem(
                    str(images.path[i]),
                    f"{result.code}: {result.message}",
                    image_key=f"{names[images.source[i]]}:{images.key[i]}",
                )
            )
        else:
            images.content_hash[i] = result.content_hash
            images.width[i] = result.width
            images.height[i] = result.height
    rows = np.flatnonzero(ok)
    codes, uniques = pd.factorize(images.content_hash[rows])
    images.uid = np.full(len(results), -1, dtype=np.int64)
    images.uid[rows] = codes
    first = np.empty(len(uniques), dtype=np.int64)
    first[codes[::-1]] = rows[::-1]  # the last write per code is its first row
    images.first = first


# ---- tags --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Csr:
    """Row -> list of int codes, with a flag per entry (e.g. a partial mapping entry).

    Stored as compressed rows (`indptr`, `indices`) and, for fast expansion of short rows,
    padded: `table[r, :count[r]]` are row r's first `PADDED` entries, -1 after.
    """

    indptr: np.ndarray  # int64 [R + 1]
    indices: np.ndarray  # int32 [nnz]
    flags: np.ndarray  # bool [nnz]
    table: np.ndarray  # int32 [R, <= PADDED]
    table_flags: np.ndarray  # bool [R, <= PADDED]

    PADDED = 8

    @classmethod
    def from_pairs(
        cls, rows: np.ndarray, cols: np.ndarray, n_rows: int, flag: np.ndarray | None = None
    ) -> _Csr:
        """Entries (rows[i], cols[i]) kept in the given order within each row."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        counts = np.bincount(rows, minlength=n_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indices = np.asarray(cols, dtype=np.int32)[order]
        flags = np.zeros(len(rows), bool) if flag is None else np.asarray(flag, bool)[order]
        within = np.arange(len(rows)) - indptr[rows[order]]
        width = int(min(cls.PADDED, max(1, counts.max(initial=0))))
        short = within < width
        table = np.full((n_rows, width), -1, dtype=np.int32)
        table[rows[order][short], within[short]] = indices[short]
        table_flags = np.zeros((n_rows, width), dtype=bool)
        table_flags[rows[order][short], within[short]] = flags[short]
        return cls(indptr, indices, flags, table, table_flags)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> _Csr:
        rows, cols = np.nonzero(matrix)
        return cls.from_pairs(rows, cols, matrix.shape[0])

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def expand(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each input code, its entries: (input position, entry code, entry flag).

        Output is grouped by input position, entries in row order.
        """
        count = self.counts()[codes]
        widest = int(count.max(initial=0))
        if widest == 1 and count.min() == 1:  # one entry each: no index arithmetic
            return np.arange(len(codes)), self.table[codes, 0], self.table_flags[codes, 0]
        if widest <= self.table.shape[1]:  # short rows: gather a padded block
            entries = self.table[codes, :widest]
            valid = entries >= 0
            pos = np.nonzero(valid)[0]
            return pos, entries[valid], self.table_flags[codes, :widest][valid]
        pos = np.repeat(np.arange(len(codes)), count)
        start = np.repeat(self.indptr[codes], count)
        entry = start + np.arange(len(pos)) - np.repeat(np.cumsum(count) - count, count)
        return pos, self.indices[entry], self.flags[entry]


class _TagSpace:
    """Tag codes of a taxonomy, ancestor/descendant lists, and (image, tag) pair keys.

    A pair key is `image << bits | tag` (int64): sorting keys sorts by image, then tag.
    """

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.tag_ids = taxonomy.tag_ids
        self.size = len(self.tag_ids)
        self.bits = max(1, (self.size - 1).bit_length())
        self.index = pd.Index(self.tag_ids)
        anc = np.zeros((self.size, self.size), dtype=bool)  # anc[t, a]: a is an ancestor of t
        for t, tag in enumerate(self.tag_ids):
            anc[t, self.index.get_indexer(pd.Index(taxonomy.ancestors(tag)))] = True
        eye = np.eye(self.size, dtype=bool)
        self.up = _Csr.from_matrix(anc)  # strict ancestors
        self.down = _Csr.from_matrix(anc.T | eye)  # self + descendants
        self.around = _Csr.from_matrix(anc | anc.T | eye)  # self + ancestors + descendants

    def codes(self, tag_ids: Iterable[str], where: str) -> np.ndarray:
        tags = list(tag_ids)
        codes = self.index.get_indexer(pd.Index(tags))
        if (codes < 0).any():
            bad = sorted({t for t, c in zip(tags, codes, strict=True) if c < 0})[:10]
            raise ValueError(f"{where}: tags not in the taxonomy: {bad}")
        return codes.astype(np.int32)

    def pair(self, img: np.ndarray, tag: np.ndarray) -> np.ndarray:
        return (img.astype(np.int64) << self.bits) | tag

    def split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return keys >> self.bits, keys & ((1 << self.bits) - 1)

    def pair_keys(self, img: np.ndarray, tag: np.ndarray, csr: _Csr) -> np.ndarray:
        """Sorted unique keys of (img, tag) pairs expanded through `csr`."""
        pos, expanded, _ = csr.expand(tag)
        return _unique(self.pair(img[pos], expanded))


def _unique(keys: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Sorted unique values (sort + adjacent compare; much faster than np.unique here).

    inplace: sort and compact `keys` itself (a temporary the caller owns); returns a view.
    """
    if len(keys) == 0:
        return keys.astype(np.int64)
    if not inplace:
        keys = keys.copy()
    keys.sort()
    return _drop_repeats(keys)


def _drop_repeats(keys: np.ndarray) -> np.ndarray:
    """Compact a sorted array in place, dropping repeated values; returns a view of `keys`."""
    written = 0
    last = None
    for start in range(0, len(keys), ROW_CHUNK):
        chunk = keys[start : start + ROW_CHUNK]
        keep = np.empty(len(chunk), dtype=bool)
        keep[0] = last is None or chunk[0] != last
        np.not_equal(chunk[1:], chunk[:-1], out=keep[1:])
        last = chunk[-1]
        if written == start and keep.all():  # nothing dropped so far: already in place
            written += len(chunk)
            continue
        kept = chunk[keep]  # a copy, so writing below `start` cannot clobber unread values
        keys[written : written + len(kept)] = kept
        written += len(kept)
    return keys[:written]


def _isin_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool mask of `a` values found in sorted unique `b` (fast when `a` is sorted too)."""
    if len(b) == 0 or len(a) == 0:
        return np.zeros(len(a), dtype=bool)
    if a[0] <= a[-1]:  # sorted: search only the part of `b` that `a` spans (cache-friendly)
        b = b[np.searchsorted(b, a[0]) : np.searchsorted(b, a[-1], side="right")]
        if len(b) == 0:
            return np.zeros(len(a), dtype=bool)
    idx = np.minimum(np.searchsorted(b, a), len(b) - 1)
    return b[idx] == a


def _union(arrays: Sequence[np.ndarray]) -> np.ndarray:
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    return arrays[0] if len(arrays) == 1 else _unique(np.concatenate(arrays), inplace=True)


def _merge_disjoint(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted union of sorted arrays that share no value (no dedupe pass needed)."""
    arrays = [a for a in arrays if len(a)]
    if len(arrays) == 1:  # one source: no copy (the peak is near)
        return arrays[0]
    merged = np.concatenate([np.zeros(0, dtype=np.int64), *arrays])
    merged.sort()
    return merged


# ---- labels ------------------------------------------------------------------------------


def _factorize(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes int, uniques) of a column; free for pandas categoricals (-1 = missing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), pd.Index(column.cat.categories.astype(str))
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.asarray(codes), pd.Index(pd.Index(uniques).astype(str))


def _label_csr(uniques: pd.Index, mapping: SourceMapping, space: _TagSpace) -> _Csr:
    """Source-label code -> tag codes (in the mapping's order), flag = partial entry."""
    frame = mapping.to_frame()
    keys = pd.DataFrame({"label": uniques.str.strip().str.lower(), "u": np.arange(len(uniques))})
    joined = keys.merge(frame[["label", "tag", "partial"]], on="label", how="inner", sort=False)
    joined["t"] = space.codes(joined["tag"], f"mapping {mapping.vocabulary!r}")
    both = joined.groupby(["u", "t"], sort=False)["partial"].all().reset_index()
    return _Csr.from_pairs(
        both["u"].to_numpy(),
        both["t"].to_numpy(),
        len(uniques),
        both["partial"].to_numpy(dtype=bool),
    )


@dataclass
class _Encoded:
    """One source's label (or box) rows as codes; no per-row copy of the table is made."""

    key_codes: np.ndarray  # int [R]: code of the row's image_key (-1 missing)
    uid_of_key: np.ndarray  # int32 [K + 1]: unique image of each key code, -1 none (last: -1)
    vocab: np.ndarray  # int [R] codes into `vocabularies`
    label: np.ndarray  # int [R] codes into `labels`
    value: np.ndarray  # int8 [R]
    vocabularies: pd.Index
    labels: pd.Index
    unmatched: int  # rows whose image_key the images table lacks

    def __len__(self) -> int:
        return len(self.key_codes)

    def images(self, rows: slice | np.ndarray) -> np.ndarray:
        """Unique image (int32, -1 when missing or unusable) of the given rows."""
        return self.uid_of_key[self.key_codes[rows]]


def _encode_rows(frame: pd.DataFrame, key_index: pd.Index, uid: np.ndarray) -> _Encoded:
    """Codes for (image, vocabulary, label) of a labels or boxes table; uid per key_index row."""
    key_codes, key_uniques = _factorize(frame["image_key"])
    if key_uniques.equals(key_index):  # readers often list images in label-key order
        local = np.arange(len(key_index))
    else:
        local = key_index.get_indexer(key_uniques)
    uid_of_key = np.append(np.where(local >= 0, uid[local], -1), -1).astype(np.int32)
    unmatched = int(np.append(local < 0, True)[key_codes].sum())  # code -1 = last: missing
    vocab, vocabularies = _factorize(frame["vocabulary"])
    label, labels = _factorize(frame["label"])
    value = (
        frame["value"].to_numpy(dtype=np.int8)
        if "value" in frame
        else np.ones(len(frame), dtype=np.int8)
    )
    return _Encoded(key_codes, uid_of_key, vocab, label, value, vocabularies, labels, unmatched)


@dataclass
class _SourcePairs:
    """What one source says: provenance rows (keys), positive and negative pair keys."""

    prov: np.ndarray  # sorted provenance keys (see `_ProvCodec`)
    positives: np.ndarray  # sorted unique pair keys (ancestors included)
    negatives: np.ndarray  # sorted unique pair keys, minus own positives and unknowns
    stats: dict[str, Any]


@dataclass(frozen=True)
class _ProvCodec:
    """Provenance row <-> int64 bit fields: pair key | source | kind (2 bits) | source label.

    The largest label code (`null_label`) stands for "no source label" (implied rows).
    """

    source_bits: int
    label_bits: int

    @classmethod
    def create(cls, space: _TagSpace, n_images: int, n_sources: int, n_labels: int) -> _ProvCodec:
        codec = cls(max(1, (n_sources - 1).bit_length()), max(1, n_labels.bit_length()))
        total = max(1, n_images.bit_length()) + space.bits + codec.low
        if total > 63:
            raise ValueError(
                f"{n_images} images x {space.size} tags x {n_sources} sources x "
                f"{n_labels} source labels need {total} bits; int64 keys hold 63"
            )
        return codec

    @property
    def low(self) -> int:
        return self.source_bits + 2 + self.label_bits

    @property
    def null_label(self) -> int:
        return (1 << self.label_bits) - 1

    def encode(
        self, pair: np.ndarray, source: int, kind: int, label: np.ndarray | int
    ) -> np.ndarray:
        tail = (source << (2 + self.label_bits)) | (kind << self.label_bits)
        return (pair << self.low) | tail | label

    def pair(self, key: np.ndarray) -> np.ndarray:
        return key >> self.low

    def decode(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pair key, source, kind, label) of each provenance key."""
        label = key & self.null_label
        kind = (key >> self.label_bits) & 3
        source = (key >> (2 + self.label_bits)) & ((1 << self.source_bits) - 1)
        return key >> self.low, source, kind, label


ROW_CHUNK = 1 << 20  # label rows (or pairs) processed at a time: bounds temporaries


@dataclass
class _VocabularyRule:
    """How one vocabulary's rows of one source become pairs."""

    csr: _Csr  # source-label code -> tag codes (flag: partial entry)
    kind: int  # HUMAN or MAPPED for positives
    policy: str  # exhaustive | verified | none
    known: np.ndarray  # sorted tag codes known for every image (exhaustive), else empty


@dataclass
class _Collected:
    """Pair keys gathered chunk by chunk (each list item sorted unique or a key batch)."""

    direct: list[np.ndarray] = field(default_factory=list)  # provenance keys of positives
    verified: list[np.ndarray] = field(default_factory=list)  # (image, tag) of value-0 rows
    unknown: list[np.ndarray] = field(default_factory=list)  # value -1, tag family expanded


def _vocabulary_rules(
    src: SourceTable,
    rows: _Encoded,
    space: _TagSpace,
    mappings: Mapping[str, SourceMapping],
    override: SourceOverride,
    human_vocabularies: Sequence[str],
) -> list[_VocabularyRule]:
    rules = []
    for vocabulary in rows.vocabularies:
        mapping = mappings.get(vocabulary)
        if mapping is None:
            raise ValueError(
                f"source {src.name!r}: no mapping for vocabulary {vocabulary!r}; "
                f"mappings given: {sorted(mappings)}"
            )
        policy = override.negatives or mapping.negatives
        known = np.zeros(0, dtype=np.int32)
        if policy == "exhaustive":
            tags = override.known_tags if override.known_tags is not None else mapping.known_tags
            known = np.sort(space.codes(tags, f"source {src.name!r} known tags"))
        kind = HUMAN if vocabulary in human_vocabularies else MAPPED
        rules.append(_VocabularyRule(_label_csr(rows.labels, mapping, space), kind, policy, known))
    return rules


def _collect_rows(
    img: np.ndarray,
    label: np.ndarray,
    value: np.ndarray,
    rule: _VocabularyRule,
    key: tuple[int, int],
    space: _TagSpace,
    codec: _ProvCodec,
    out: _Collected,
) -> None:
    """Map a chunk of one vocabulary's rows to tags; `key` = (source index, label offset)."""
    pos, tag, partial = rule.csr.expand(label)
    val, pimg = value[pos], img[pos]
    is_pos = np.flatnonzero(val == 1)
    plabel = label[pos[is_pos]].astype(np.int64) + key[1]
    out.direct.append(
        codec.encode(space.pair(pimg[is_pos], tag[is_pos]), key[0], rule.kind, plabel)
    )
    if rule.policy != "none":
        neg = (val == 0) & ~partial
        out.verified.append(_unique(space.pair(pimg[neg], tag[neg])))
    unk = val == -1
    if unk.any():
        out.unknown.append(space.pair_keys(pimg[unk], tag[unk], space.around))


def _expand_sorted(
    keys: np.ndarray, csr: _Csr, space: _TagSpace, drop: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """Sorted unique pairs of `keys` expanded through `csr`, minus the sorted arrays `drop`."""
    parts = []
    for start in range(0, len(keys), ROW_CHUNK):
        part = space.pair_keys(*space.split(keys[start : start + ROW_CHUNK]), csr)
        for other in drop:
            part = part[~_isin_sorted(part, other)]
        parts.append(part)
    return _union(parts)


def _provenance_keys(s: int, out: _Collected, space: _TagSpace, codec: _ProvCodec) -> np.ndarray:
    """Sorted provenance keys of source `s`: its direct rows plus one implied row per ancestor
    (image, tag) it does not give directly. Written into one buffer to keep the peak low."""
    direct = _union(out.direct)
    out.direct.clear()
    direct_pairs = _unique(codec.pair(direct), inplace=True)
    implied = _expand_sorted(direct_pairs, space.up, space, drop=[direct_pairs])
    del direct_pairs
    prov = np.empty(len(direct) + len(implied), dtype=np.int64)
    prov[: len(direct)] = direct
    for start in range(0, len(implied), ROW_CHUNK):
        at = len(direct) + start
        chunk = implied[start : start + ROW_CHUNK]
        prov[at : at + len(chunk)] = codec.encode(chunk, s, IMPLIED, codec.null_label)
    del direct, implied
    prov.sort()
    return prov


def _pairs_of(prov: np.ndarray, codec: _ProvCodec) -> np.ndarray:
    """Sorted unique pair keys of sorted provenance keys."""
    pairs = np.empty(len(prov), dtype=np.int64)
    for start in range(0, len(prov), ROW_CHUNK):
        pairs[start : start + ROW_CHUNK] = codec.pair(prov[start : start + ROW_CHUNK])
    return _drop_repeats(pairs)  # several labels can give one tag


def _source_pairs(
    s: int,
    src: SourceTable,
    rows: _Encoded,
    label_offset: int,
    covered: np.ndarray,
    space: _TagSpace,
    codec: _ProvCodec,
    rules: Sequence[_VocabularyRule],
) -> _SourcePairs:
    """Positives, negatives and provenance of one source; `covered`: its unique images."""
    out = _Collected()
    unmapped = np.zeros((len(rules), len(rows.labels)), dtype=np.int64)
    for start in range(0, len(rows), ROW_CHUNK):
        chunk = slice(start, start + ROW_CHUNK)
        img, label, value = rows.images(chunk), rows.label[chunk], rows.value[chunk]
        vocab = rows.vocab[chunk]
        for v, rule in enumerate(rules):
            mine = img >= 0
            if len(rules) > 1:
                mine &= vocab == v
            sel = slice(None) if mine.all() else np.flatnonzero(mine)
            lab = label[sel]
            unmapped[v] += np.bincount(
                lab[rule.csr.counts()[lab] == 0], minlength=unmapped.shape[1]
            )
            _collect_rows(img[sel], lab, value[sel], rule, (s, label_offset), space, codec, out)
    prov = _provenance_keys(s, out, space, codec)
    positives = _pairs_of(prov, codec)
    absent = _union([_outer_keys(covered, r.known, space.bits) for r in rules])
    absent = absent[~_isin_sorted(absent, positives)]  # a present known tag says nothing more
    verified = _union(out.verified)
    out.verified.clear()
    conflicts = int(_isin_sorted(verified, positives).sum())
    said_absent = _union([absent, verified])
    del absent, verified
    # no animal => no dog; minus what the source leaves unknown and what it says is present
    negatives = _expand_sorted(
        said_absent, space.down, space, drop=[_union(out.unknown), positives]
    )
    del said_absent
    stats: dict[str, Any] = {
        "label_rows": len(rows),
        "label_rows_unmatched": rows.unmatched,
        "unmapped": {
            vocabulary: {
                str(rows.labels[int(i)]): int(unmapped[v, i]) for i in np.flatnonzero(unmapped[v])
            }
            for v, vocabulary in enumerate(rows.vocabularies)
        },
        "conflicts_within_source": conflicts,
        "positive_pairs": len(positives),
        "negative_pairs": len(negatives),
    }
    return _SourcePairs(prov, positives, negatives, stats)


def _outer_keys(images: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """Sorted pair keys of every (image, tag) for sorted `images` and sorted tag `codes`."""
    if len(images) == 0 or len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    return ((images.astype(np.int64)[:, None] << bits) | codes[None, :]).ravel()


# ---- the merge ---------------------------------------------------------------------------


def assemble(
    sources: Sequence[SourceTable],
    taxonomy: Taxonomy,
    mappings: Mapping[str, SourceMapping],
    *,
    hashing: bool = True,
    verify: VerifyMode = "decode",
    workers: int = 2,
    human_vocabularies: Sequence[str] = ("tags",),
    overrides: Mapping[str, SourceOverride] | None = None,
) -> AssemblyResult:
    """Merge source tables into one manifest (one row per unique image, fold left null).

    mappings: vocabulary -> mapping (every vocabulary the labels use needs one).
    hashing: hash + probe each file ("decode" also decodes it at 1/8 scale, which finds
    truncation); unusable files are reported and left out. Off: no file is opened, image_id =
    "<source>:<image_key>", sizes come from the images tables (a label-only run).
    human_vocabularies: their positives get provenance "human" instead of "mapped".
    overrides: source name -> `SourceOverride` (its mappings win over `mappings`).
    """
    names = [src.name for src in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique; given {names}")
    overrides = dict(overrides or {})
    unknown_overrides = sorted(set(overrides) - set(names))
    if unknown_overrides:
        raise ValueError(f"overrides name unknown sources {unknown_overrides}; sources: {names}")
    problems = [p for src in sources for p in src.problems]
    images = _collect_images(sources, problems)
    if hashing:
        _identify(images, names, workers, verify, problems)
    space = _TagSpace(taxonomy)
    slices = [slice(images.offsets[s], images.offsets[s + 1]) for s in range(len(sources))]
    key_index = [pd.Index(images.key[sl]) for sl in slices]
    encoded = [
        _encode_rows(src.labels, key_index[s], images.uid[slices[s]])
        for s, src in enumerate(sources)
    ]
    label_offsets = np.concatenate([[0], np.cumsum([len(e.labels) for e in encoded])])
    codec = _ProvCodec.create(space, len(images.first), len(sources), int(label_offsets[-1]))
    per_source = []
    source_mappings = [
        {**mappings, **overrides.get(src.name, SourceOverride()).mappings} for src in sources
    ]
    for s, src in enumerate(sources):
        uid = images.uid[slices[s]]
        covered = _unique(uid[uid >= 0])
        rules = _vocabulary_rules(
            src,
            encoded[s],
            space,
            source_mappings[s],
            overrides.get(src.name, SourceOverride()),
            human_vocabularies,
        )
        per_source.append(
            _source_pairs(s, src, encoded[s], int(label_offsets[s]), covered, space, codec, rules)
        )
        if encoded[s].unmatched:
            problems.append(
                Problem(
                    src.name,
                    f"{encoded[s].unmatched} label rows name image "
                    "keys that its images table lacks; ignored",
                )
            )
    keys = {  # the big arrays live only here, so the manifest builder can free them early
        "positives": _union([p.positives for p in per_source]),
        "negatives": _union([p.negatives for p in per_source]),
        "prov": _merge_disjoint([p.prov for p in per_source]),  # source is part of the key
    }
    for p in per_source:
        p.prov = p.positives = p.negatives = np.zeros(0, dtype=np.int64)
    across = _isin_sorted(keys["negatives"], keys["positives"])
    conflicts_across = int(across.sum())
    keys["negatives"] = keys["negatives"][~across]  # positives win
    n_positives, n_negatives = len(keys["positives"]), len(keys["negatives"])
    del across
    labels = pa.array(
        np.concatenate([e.labels.to_numpy(dtype=object) for e in encoded]) if encoded else [],
        pa.string(),
    )
    box_uid, box_struct, box_counts = _boxes(
        sources, key_index, images, slices, space, source_mappings
    )
    manifest = _build_manifest(
        images, names, space, keys, codec, labels, box_uid, box_struct, hashing
    )
    stats = _stats(
        images,
        names,
        space,
        per_source,
        (n_positives, n_negatives, conflicts_across),
        box_counts,
        len(problems),
    )
    return AssemblyResult(manifest, problems, stats)


def _boxes(
    sources: Sequence[SourceTable],
    key_index: Sequence[pd.Index],
    images: _Images,
    slices: Sequence[slice],
    space: _TagSpace,
    mappings: Sequence[Mapping[str, SourceMapping]],
) -> tuple[np.ndarray, pa.StructArray, dict[str, int]]:
    """Boxes: (unique image per box, sorted; struct array of BOX_TYPE fields; boxes per source)."""
    uids, tags, labels, coords, difficult = [], [], [], [], []
    counts = {src.name: 0 for src in sources}
    for s, src in enumerate(sources):
        if len(src.boxes) == 0:
            continue
        enc = _encode_rows(src.boxes, key_index[s], images.uid[slices[s]])
        img = enc.images(slice(None))
        kept = np.flatnonzero(img >= 0)
        boxes = src.boxes.iloc[kept]
        first_tag = np.full(len(kept), -1, dtype=np.int32)
        for v, vocabulary in enumerate(enc.vocabularies):
            mapping = mappings[s].get(vocabulary)
            if mapping is not None:
                first = _label_csr(enc.labels, mapping, space).table[:, 0]
                sel = enc.vocab[kept] == v
                first_tag[sel] = first[enc.label[kept][sel]]
        counts[src.name] = len(kept)
        uids.append(img[kept])
        tags.append(first_tag)
        labels.append(enc.labels.to_numpy(dtype=object)[enc.label[kept]])
        coords.append(boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype=np.float32))
        difficult.append(boxes["difficult"].to_numpy(dtype=bool))
    if not uids:
        uid = np.zeros(0, dtype=np.int64)
        tag, label = np.zeros(0, np.int32), np.zeros(0, dtype=object)
        xyxy, diff = np.zeros((0, 4), np.float32), np.zeros(0, bool)
    else:
        order = np.argsort(np.concatenate(uids), kind="stable")
        uid = np.concatenate(uids)[order]
        tag, label = np.concatenate(tags)[order], np.concatenate(labels)[order]
        xyxy, diff = np.concatenate(coords)[order], np.concatenate(difficult)[order]
    tag_array = pa.DictionaryArray.from_arrays(
        pa.array(tag, mask=tag < 0), pa.array(space.tag_ids, pa.string())
    )
    fields = [tag_array, pa.array(label, pa.string())]
    fields += [pa.array(xyxy[:, i]) for i in range(4)] + [pa.array(diff)]
    names = ["tag", "source_label", "xmin", "ymin", "xmax", "ymax", "difficult"]
    return uid, pa.StructArray.from_arrays(fields, names=names), counts


def _index_type(n: int) -> type[np.signedinteger[Any]]:
    """Smallest signed integer type for dictionary indices 0..n-1 (and -1)."""
    for dtype in (np.int8, np.int16, np.int32):
        if n <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def _field(keys: np.ndarray, shift: int, bits: int, n_values: int) -> np.ndarray:
    """Bit field `(keys >> shift) & (2**bits - 1)` as the smallest type for `n_values` values."""
    out = np.empty(len(keys), dtype=_index_type(n_values))
    mask = (1 << bits) - 1
    for i in range(0, len(keys), ROW_CHUNK):
        out[i : i + ROW_CHUNK] = (keys[i : i + ROW_CHUNK] >> shift) & mask
    return out


def _offsets(keys: np.ndarray, n_rows: int, shift: int) -> pa.Array:
    """List offsets of `n_rows` rows from sorted keys whose row is `key >> shift`."""
    starts = np.arange(n_rows + 1, dtype=np.int64) << shift
    return pa.array(np.searchsorted(keys, starts).astype(np.int32))


def _dict_array(codes: np.ndarray, dictionary: pa.Array | Sequence[str]) -> pa.DictionaryArray:
    values = dictionary if isinstance(dictionary, pa.Array) else pa.array(dictionary, pa.string())
    codes = codes.astype(_index_type(len(values)), copy=False)
    return pa.DictionaryArray.from_arrays(pa.array(codes), values)


def _tag_lists(keys: np.ndarray, n: int, space: _TagSpace) -> pa.ListArray:
    """list<dictionary<tag id>> per image from sorted pair keys."""
    tags = _dict_array(_field(keys, 0, space.bits, space.size), space.tag_ids)
    return pa.ListArray.from_arrays(_offsets(keys, n, space.bits), tags)


def _known_lists(
    positives: np.ndarray, negatives: np.ndarray, n: int, space: _TagSpace
) -> pa.ListArray:
    """list<dictionary<tag id>> of positives + negatives (disjoint sorted pair keys) per image.

    Merges by position instead of materialising the union of the int64 keys.
    """
    at = np.searchsorted(positives, negatives)
    at += np.arange(len(negatives))  # positions of the negatives in the merged order
    is_positive = np.ones(len(positives) + len(negatives), dtype=bool)
    is_positive[at] = False
    codes = np.empty(len(is_positive), dtype=_index_type(space.size))
    codes[at] = _field(negatives, 0, space.bits, space.size)
    del at
    codes[is_positive] = _field(positives, 0, space.bits, space.size)
    starts = np.arange(n + 1, dtype=np.int64) << space.bits
    offsets = np.searchsorted(positives, starts) + np.searchsorted(negatives, starts)
    tags = _dict_array(codes, space.tag_ids)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), tags)


def _provenance_lists(
    prov: np.ndarray, n: int, space: _TagSpace, codec: _ProvCodec, names: pa.Array, labels: pa.Array
) -> pa.ListArray:
    """list<struct<tag, source, source_label, kind>> per image from sorted provenance keys."""
    label = _field(prov, 0, codec.label_bits, codec.null_label + 1)
    fields = [
        _dict_array(_field(prov, codec.low, space.bits, space.size), space.tag_ids),
        _dict_array(_field(prov, 2 + codec.label_bits, codec.source_bits, len(names)), names),
        pa.DictionaryArray.from_arrays(pa.array(label, mask=label == codec.null_label), labels),
        _dict_array(_field(prov, codec.label_bits, 2, len(KIND_NAMES)), KIND_NAMES),
    ]
    struct = pa.StructArray.from_arrays(fields, names=["tag", "source", "source_label", "kind"])
    return pa.ListArray.from_arrays(_offsets(prov, n, codec.low + space.bits), struct)


def _build_manifest(
    images: _Images,
    names: Sequence[str],
    space: _TagSpace,
    keys: dict[str, np.ndarray],
    codec: _ProvCodec,
    labels: pa.Array,
    box_uid: np.ndarray,
    boxes: pa.StructArray,
    hashing: bool,
) -> pa.Table:
    """The manifest table from sorted key arrays (`keys` is emptied) and per-image arrays.

    Columns and order of `MANIFEST_SCHEMA`; repeated strings (tags, sources, provenance,
    box tags) stay dictionary-encoded, `table.cast(MANIFEST_SCHEMA)` gives plain strings.
    """
    n = len(images.first)
    first = images.first
    source_names = pa.array(list(names), pa.string())
    source = _dict_array(images.source[first], source_names)
    if hashing:
        image_id = pc.utf8_slice_codeunits(pa.array(images.content_hash[first], pa.string()), 0, 16)
    else:
        image_id = pc.binary_join_element_wise(
            source.cast(pa.string()), pa.array(images.key[first], pa.string()), ":"
        )
    ok = np.flatnonzero(images.uid >= 0)
    mask = np.full(n, None, dtype=object)
    has_mask = ok[pd.notna(images.mask_path[ok])][::-1]
    mask[images.uid[has_mask]] = images.mask_path[has_mask]  # first non-null wins
    s_bits = max(1, (len(names) - 1).bit_length())
    membership = _unique((images.uid[ok] << s_bits) | images.source[ok])
    sources = _dict_array(_field(membership, 0, s_bits, len(names)), source_names)
    box_offsets = np.searchsorted(box_uid, np.arange(n + 1)).astype(np.int32)
    width, height = images.width[first], images.height[first]
    # largest key arrays first, each freed once its list column is built (keeps the peak low)
    known_lists = _known_lists(keys["positives"], keys.pop("negatives"), n, space)
    tag_lists = _tag_lists(keys.pop("positives"), n, space)
    provenance = _provenance_lists(keys.pop("prov"), n, space, codec, source_names, labels)
    columns = {
        "image_id": image_id,
        "path": pa.array(images.path[first], pa.string()),
        "content_hash": pa.array(images.content_hash[first], pa.string()),
        "width": pa.array(np.nan_to_num(width).astype(np.int32), mask=np.isnan(width)),
        "height": pa.array(np.nan_to_num(height).astype(np.int32), mask=np.isnan(height)),
        "source": source,
        "sources": pa.ListArray.from_arrays(_offsets(membership, n, s_bits), sources),
        "tags": tag_lists,
        "known": known_lists,
        "provenance": provenance,
        "boxes": pa.ListArray.from_arrays(pa.array(box_offsets), boxes),
        "mask_path": pa.array(mask, pa.string()),
        "fold": pa.nulls(n, pa.int16()),
    }
    return pa.Table.from_arrays(
        [columns[name] for name in MANIFEST_SCHEMA.names], names=MANIFEST_SCHEMA.names
    )


def _stats(
    images: _Images,
    names: Sequence[str],
    space: _TagSpace,
    per_source: Sequence[_SourcePairs],
    pairs: tuple[int, int, int],
    boxes: Mapping[str, int],
    n_problems: int,
) -> dict[str, Any]:
    usable = images.uid >= 0
    unmapped: dict[str, dict[str, int]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for s, name in enumerate(names):
        rows = images.source == s
        st = dict(per_source[s].stats)
        for vocabulary, counts in st.pop("unmapped").items():
            merged = unmapped.setdefault(vocabulary, {})
            for label, count in counts.items():
                merged[label] = merged.get(label, 0) + count
        sources[name] = {
            "images_listed": int(rows.sum()),
            "images_usable": int((rows & usable).sum()),
            "boxes": boxes[name],
            **st,
        }
    return {
        "images_listed": len(images.uid),
        "images_unusable": int((~usable).sum()),
        "images": len(images.first),
        "duplicates_merged": int(usable.sum()) - len(images.first),
        "tags": space.size,
        "positive_pairs": pairs[0],
        "negative_pairs": pairs[1],
        "conflicts_within_source": sum(p.stats["conflicts_within_source"] for p in per_source),
        "conflicts_across_sources": pairs[2],
        "boxes": sum(boxes.values()),
        "problems": n_problems,
        "sources": sources,
        "unmapped_labels": {
            v: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED])
            for v, c in unmapped.items()
            if c
        },
        "unmapped_label_counts": {v: len(c) for v, c in unmapped.items() if c},
    }


def with_folds(manifest: pa.Table, folds: np.ndarray) -> pa.Table:
    """The manifest with its `fold` column set (int16 [N])."""
    if len(folds) != manifest.num_rows:
        raise ValueError(f"{len(folds)} folds for {manifest.num_rows} manifest rows")
    i = manifest.schema.get_field_index("fold")
    return manifest.set_column(i, "fold", pa.array(np.asarray(folds, dtype=np.int16)))
