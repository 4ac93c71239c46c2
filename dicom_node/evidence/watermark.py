"""An invisible watermark in the stored pixel values of every synthetic slice.

DICOM tags that say "synthetic" can be stripped; this mark travels with the pixel values.
Each 2-D slice independently carries a 16-byte payload — :data:`MARKER`, the 8-byte
provenance identifier and a CRC-32 of both — and :func:`detect` needs nothing but the 2-D
array of stored values: no tags, no original, no secret (the key is public so that any
verifier can check).

Scheme — keyed spread-transform dither modulation (STDM) with a convolutional code:

* The 128 payload bits are encoded with the K=7, rate-1/2 convolutional code (generators 171
  and 133 octal, zero-terminated) into 268 coded bits.
* A periodic grid of ``TILE``×``TILE`` tiles covers the image, anchored at its top-left pixel.
  A keyed permutation (SHAKE-256 of the key) gives each coded bit 60 positions of every tile,
  30 with sign +1 and 30 with sign -1. A (tile, coded bit) pair is a *group*; every tile
  repeats every coded bit. Tiles cut by the image edge keep as many + as - pixels per group.
* A group of ``n`` pixels has the projection ``s = Σ sign·pixel``. Embedding moves ``s`` onto
  the lattice ``d + bit·Q/2 + Q·ℤ`` (``Q ≈ 1.5 n``, ``d`` a keyed dither) by changing pixels
  by ±1. Only pixels that stay within the dtype's range (or a given ``value_range``) move;
  as each pixel can move one way or the other, the projection always ends less than ``Q/4``
  from its target, on the right side of the decision boundary. Mean ``|Δ|`` is about 3/8.
* Detection recomputes every projection, turns its position between the two sub-lattices
  into a vote ``n·cos(2π(s - d)/Q)``, sums the votes of all tiles per coded bit, runs a soft
  Viterbi decoder and checks the marker and the CRC.

Why it survives what it must: in an untouched slice every vote has the right sign, so any
lossless re-encoding or tag edit decodes without error. Signs are balanced in every group,
so adding a constant (rescale intercept, signed/unsigned conversion) changes no projection.
Mild noise or lossy compression (errors up to about 2 stored units RMS) move projections by
a fraction of the ``Q/4`` margin, and the tiles' votes plus the code absorb the rest; damage
confined to some tiles (a blanked annotation) only silences those tiles. With
``search_crop`` the detector also finds the tile grid again after rows or columns were cut
from (or added to) the top or left.

False positives, modelling the keyed dither fractions ``u_b`` (``d = ⌊u_b·Q⌋``) as uniform
and independent of an unmarked image: replacing ``u_b`` by ``u_b + 1/2 mod 1`` for the coded
bits of any codeword ``c`` leaves that model unchanged and flips exactly the votes of ``c``'s
bits. The code is linear and the Viterbi decoder equivariant, so the decoded message is
uniform over all 2**128: it passes the 32-bit marker and the CRC-32 with probability
2**-64 ≈ 5.4e-20 per slice. The crop search decodes up to ``_CANDIDATES`` more placements,
chosen with the coded bits of the marker's first 16 bits; flipping codewords whose first 16
message bits are zero leaves that choice unchanged, so the other 112 decoded bits stay
uniform and each placement passes with probability at most 2**-48: in all at most
2**-64 + 4·2**-48 ≈ 1.4e-14 per slice.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

MARKER = b"SYN1"
"""Identifies "synthetic, made by dicom-node", version 1 of this scheme."""
DEFAULT_KEY = b"dicom-node synthetic-image watermark v1"
"""Public key: anyone holding it can detect; a deployment may override it."""
IDENTIFIER_LENGTH = 8
MIN_SIZE = 64
"""Smallest number of rows and of columns a slice must have to carry the payload."""
TILE = 128
"""Side of the periodic tiles; every whole tile carries every coded bit."""

_CONSTRAINT = 7
_GENERATORS = (0o171, 0o133)
_INFO_BITS = 8 * (len(MARKER) + IDENTIFIER_LENGTH + 4)
_CODED_BITS = len(_GENERATORS) * (_INFO_BITS + _CONSTRAINT - 1)
_PER_TILE = 2 * (TILE * TILE // (2 * _CODED_BITS))
_PERIOD = _PER_TILE + 2 * (_PER_TILE // 4)
"""Lattice period of a whole-tile group."""
_PILOTS = len(_GENERATORS) * 8 * len(MARKER)
"""Leading coded bits that depend on the marker alone: known to the detector."""
_SYNC_BITS = _PILOTS // 2
"""Pilots the crop search fits: those of the marker's first two bytes. The last two bytes
stay unbiased by the search, which bounds its false positives (see the module docstring)."""
_CANDIDATES = 4
"""Tile-grid placements fully decoded by a crop search."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Origin = tuple[int, int]
Bounds = tuple[int, int]


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found in one slice."""

    found: bool
    identifier: bytes | None
    """The 8-byte provenance identifier when found."""
    score: float
    """Mean vote of the pixel groups carrying the marker's coded bits for their known values,
    in [-1, 1]: 1.0 for an untouched mark, about 0 for an unmarked image (below 0.25 in
    absolute value on every corpus tested); in between when a mark was damaged, even if too
    much to be found."""


@dataclass(frozen=True)
class _Layout:
    """The groups of one image shape and tile-grid placement, pixels in embedding order.

    Only non-empty groups are kept; each group's pixels are contiguous in ``pixels``.
    """

    pixels: IntArray
    """Flat indices of the pixels used, sorted by group."""
    signs: IntArray
    """±1 per used pixel."""
    starts: IntArray
    """Offset of each group's first pixel in ``pixels``."""
    sizes: IntArray
    """Pixels per group, ``n`` (even: as many + as - signs)."""
    periods: IntArray
    """Lattice period ``Q = n + 2⌊n/4⌋``: even, about 1.5 n, below 2 n."""
    dithers: IntArray
    """Lattice offset ``d`` of each group, in ``[0, Q)``."""
    bits: IntArray
    """Coded-bit index each group carries."""


def identifier_for(provenance_json: bytes) -> bytes:
    """The 8-byte identifier of a provenance record: the first bytes of its SHA-256."""
    return hashlib.sha256(provenance_json).digest()[:IDENTIFIER_LENGTH]


def embed(
    pixels: np.ndarray,
    identifier: bytes,
    key: bytes = DEFAULT_KEY,
    *,
    value_range: Bounds | None = None,
) -> np.ndarray:
    """Return a copy of a 2-D slice carrying ``identifier``, with the same dtype and shape.

    Every stored value changes by -1, 0 or +1 and never leaves ``value_range`` (default: the
    dtype's range; pass e.g. ``(0, 4095)`` when Bits Stored is 12, so that no value needs a
    13th bit). The result is checked with :func:`detect` before it is returned, so an
    unmarked synthetic slice cannot come out of this function.

    Raises:
        ValueError: ``identifier`` is not 8 bytes; ``pixels`` is not a 2-D array of 8- to
            32-bit integers of at least ``MIN_SIZE``×``MIN_SIZE``; or ``value_range`` is
            not a range of at least two values within the dtype holding every pixel.
        RuntimeError: the mark did not verify after embedding (a bug; never expected).
    """
    _check_embeddable(pixels, identifier)
    bounds = _bounds(pixels, value_range)
    layout = _layout(pixels.shape, key)
    values = pixels.astype(np.int64).ravel()
    used = values[layout.pixels]
    shifts = _shifts(layout, used, _encode(_payload(identifier)), bounds)
    values[layout.pixels] += _changes(layout, used, shifts, bounds)
    marked = values.astype(pixels.dtype).reshape(pixels.shape)
    check = detect(marked, key)
    if check.identifier != bytes(identifier):
        raise RuntimeError(f"watermark did not verify after embedding (score {check.score:.3f})")
    return marked


def detect(pixels: np.ndarray, key: bytes = DEFAULT_KEY, *, search_crop: bool = False) -> Detection:
    """Look for the watermark in a 2-D slice of stored values (or values offset by a constant).

    With ``search_crop``, a slice in which the mark is not found where :func:`embed` put it
    is searched again for every placement of the tile grid, which finds marks in slices cut
    or padded at the top or left (some 30 ms more for 512×512) as long as one whole tile
    remains: always when the slice still has ``2·TILE - 1`` rows and columns. A slice
    smaller than ``MIN_SIZE`` in either direction cannot carry the mark: not found.

    Raises:
        ValueError: ``pixels`` is not 2-D or not of a real numeric dtype.
    """
    _check_detectable(pixels)
    if min(pixels.shape) < MIN_SIZE:
        return Detection(found=False, identifier=None, score=0.0)
    values = pixels.astype(np.float64)
    found = _decode(_layout(pixels.shape, key), values.ravel())
    if found.found or not search_crop:
        return found
    for origin in _grid_candidates(values, key):
        moved = _decode(_layout(pixels.shape, key, origin), values.ravel())
        if moved.found:
            return moved
    return found


def _check_embeddable(pixels: np.ndarray, identifier: bytes) -> None:
    """Reject what :func:`embed` cannot mark, saying why."""
    if not isinstance(identifier, bytes | bytearray) or len(identifier) != IDENTIFIER_LENGTH:
        raise ValueError(f"identifier must be {IDENTIFIER_LENGTH} bytes, got {identifier!r}")
    if pixels.ndim != 2:
        raise ValueError(f"expected one 2-D slice, got an array of shape {pixels.shape}")
    if pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 4:
        raise ValueError(
            f"pixel dtype {pixels.dtype} is not supported: the watermark goes into stored "
            "integer values (uint8, int16, uint16, up to 32 bits), not floats or rescaled values"
        )
    if min(pixels.shape) < MIN_SIZE:
        raise ValueError(
            f"image of {pixels.shape[0]}×{pixels.shape[1]} pixels is too small to carry the "
            f"watermark: at least {MIN_SIZE}×{MIN_SIZE} are needed"
        )


def _bounds(pixels: np.ndarray, value_range: Bounds | None) -> Bounds:
    """The range embedding must stay in: ``value_range``, checked, or the dtype's range."""
    info = np.iinfo(pixels.dtype)
    if value_range is None:
        return int(info.min), int(info.max)
    low, high = (int(v) for v in value_range)
    if not info.min <= low < high <= info.max:
        raise ValueError(f"value_range {value_range} is not a range within {pixels.dtype}")
    if pixels.min() < low or pixels.max() > high:
        raise ValueError(
            f"pixel values {pixels.min()}..{pixels.max()} fall outside value_range {value_range}"
        )
    return low, high


def _check_detectable(pixels: np.ndarray) -> None:
    """Reject arrays that are not one slice of real numbers."""
    if pixels.ndim != 2:
        raise ValueError(f"expected one 2-D slice, got an array of shape {pixels.shape}")
    if pixels.dtype.kind not in "biuf":
        raise ValueError(f"pixel dtype {pixels.dtype} is not a real numeric type")


def _payload(identifier: bytes) -> IntArray:
    """The 128 payload bits: marker, identifier and CRC-32 of both, most significant first."""
    body = MARKER + bytes(identifier)
    data = body + zlib.crc32(body).to_bytes(4, "big")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)


def _parse_payload(bits: IntArray) -> bytes | None:
    """The identifier carried by decoded payload bits, or None when marker or CRC differ."""
    data = np.packbits(bits.astype(np.uint8)).tobytes()
    body, crc = data[:-4], data[-4:]
    if not body.startswith(MARKER) or zlib.crc32(body).to_bytes(4, "big") != crc:
        return None
    return body[len(MARKER) :]


def _encode(info: IntArray) -> IntArray:
    """Convolutionally encode ``info`` (zero-terminated); the two outputs alternate."""
    padded = np.concatenate([info, np.zeros(_CONSTRAINT - 1, dtype=np.int64)])
    outputs = [np.convolve(padded, _taps(g))[: padded.size] % 2 for g in _GENERATORS]
    return np.stack(outputs, axis=1).ravel()


def _taps(generator: int) -> IntArray:
    """A generator polynomial as taps on (current input, previous input, ...)."""
    return np.array([(generator >> (_CONSTRAINT - 1 - i)) & 1 for i in range(_CONSTRAINT)])


@lru_cache(maxsize=1)
def _trellis() -> tuple[IntArray, FloatArray]:
    """For each state: its two predecessor states and the ±1 code outputs of each branch.

    A state holds the last six inputs, the newest in its top bit.
    """
    memory = _CONSTRAINT - 1
    registers = (np.arange(1 << memory)[:, None] << 1) | np.arange(2)[None, :]
    reg_bits = (registers[..., None] >> (memory - np.arange(_CONSTRAINT))) & 1
    outputs = [1.0 - 2.0 * ((reg_bits * _taps(g)).sum(axis=-1) % 2) for g in _GENERATORS]
    return registers & ((1 << memory) - 1), np.stack(outputs, axis=-1)


def _viterbi(soft: FloatArray) -> IntArray:
    """Maximum-likelihood info bits for soft coded bits (positive means 0)."""
    predecessors, branch_signs = _trellis()
    steps = soft.reshape(-1, len(_GENERATORS))
    metric = np.full(predecessors.shape[0], -np.inf)
    metric[0] = 0.0
    choices = np.empty((steps.shape[0], predecessors.shape[0]), dtype=np.int64)
    for t, received in enumerate(steps):
        candidates = metric[predecessors] + branch_signs @ received
        choices[t] = candidates[:, 1] > candidates[:, 0]
        metric = np.maximum(candidates[:, 0], candidates[:, 1])
    state, top = 0, _CONSTRAINT - 2
    bits = np.empty(steps.shape[0], dtype=np.int64)
    for t in range(steps.shape[0] - 1, -1, -1):
        bits[t] = state >> top
        state = int(predecessors[state, choices[t, state]])
    return bits[:_INFO_BITS]


def _decode(layout: _Layout, values: FloatArray) -> Detection:
    """Vote, decode and check the payload of a flattened slice under one layout."""
    soft, weight = _soft_bits(layout, values[layout.pixels])
    pilots = slice(0, _PILOTS)
    agreement = float(soft[pilots] @ _pilot_signs())
    score = agreement / float(weight[pilots].sum()) if weight[pilots].any() else 0.0
    identifier = _parse_payload(_viterbi(soft))
    return Detection(found=identifier is not None, identifier=identifier, score=score)


@lru_cache(maxsize=1)
def _pilot_signs() -> FloatArray:
    """±1 values of the pilot coded bits (+1 for 0), the same for every identifier."""
    return (1.0 - 2.0 * _encode(_payload(bytes(IDENTIFIER_LENGTH)))[:_PILOTS]).astype(np.float64)


def _projections(layout: _Layout, used: np.ndarray) -> np.ndarray:
    """Each group's ``Σ sign·value`` from the values of the used pixels."""
    return np.add.reduceat(layout.signs * used, layout.starts)


def _soft_bits(layout: _Layout, used: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per coded bit, the sum of its groups' votes ``n·cos(2π(s - d)/Q)`` and of their ``n``."""
    residue = (_projections(layout, used) - layout.dithers) / layout.periods
    votes = layout.sizes * np.cos(2.0 * np.pi * residue)
    summed = np.bincount(layout.bits, weights=votes, minlength=_CODED_BITS)
    weights = np.bincount(layout.bits, weights=layout.sizes, minlength=_CODED_BITS)
    return summed.astype(np.float64), weights.astype(np.float64)


def _shifts(layout: _Layout, used: IntArray, coded: IntArray, bounds: Bounds) -> IntArray:
    """Signed change of each group's projection towards its bit's lattice.

    Moving up by ``u`` or down by ``Q - u`` reaches the target; each way is capped by the
    pixels able to move that way, and the way that ends closer wins. Every pixel can move
    one way or the other, so the two capacities add up to at least ``n``; with ``Q < 2n``
    the projection therefore always ends less than ``Q/4`` from the target.
    """
    q = layout.periods
    target = layout.dithers + coded[layout.bits] * (q // 2)
    up = (target - _projections(layout, used)) % q
    room_up, room_down = (
        np.add.reduceat(_movable(layout, used, d, bounds).astype(np.int64), layout.starts)
        for d in (1, -1)
    )
    reach_up, reach_down = np.minimum(room_up, up), np.minimum(room_down, q - up)
    miss_up, miss_down = up - reach_up, q - up - reach_down
    go_up = (miss_up < miss_down) | ((miss_up == miss_down) & (reach_up <= reach_down))
    return np.where(go_up, reach_up, -reach_down)


def _movable(
    layout: _Layout, used: IntArray, direction: int | IntArray, bounds: Bounds
) -> npt.NDArray[np.bool_]:
    """Whether each used pixel can change by ``direction·sign`` and stay within ``bounds``."""
    moved = used + direction * layout.signs
    return (moved >= bounds[0]) & (moved <= bounds[1])


def _changes(layout: _Layout, used: IntArray, shifts: IntArray, bounds: Bounds) -> IntArray:
    """±1/0 change of each used pixel realising ``shifts``: the first movable pixels of groups."""
    direction = np.repeat(np.sign(shifts), layout.sizes)
    movable = _movable(layout, used, direction, bounds)
    seen: npt.NDArray[np.intp] = np.cumsum(movable)
    before_group = np.repeat(seen[layout.starts] - movable[layout.starts], layout.sizes)
    chosen = movable & (seen - before_group <= np.repeat(np.abs(shifts), layout.sizes))
    return np.where(chosen, direction * layout.signs, 0)


def _grid_candidates(values: FloatArray, key: bytes) -> list[Origin]:
    """The most likely tile-grid placements of a slice that was cut or padded.

    A window of whole-tile positions near the centre is scored by how close the projections
    of the groups of the first ``_SYNC_BITS`` pilots lie to their known lattice points; the
    best few placements are returned as grid origins.
    """
    rows, cols = values.shape
    span = (min(TILE, rows - TILE + 1), min(TILE, cols - TILE + 1))
    if min(span) < 1:
        return []
    top, left = (rows - TILE - span[0] + 1) // 2, (cols - TILE - span[1] + 1) // 2
    score = np.zeros(span)
    for r, c, sign, target in _pilot_positions(key):
        sums = np.zeros(span)
        for i, j, s in zip(r, c, sign, strict=True):
            sums += s * values[top + i : top + i + span[0], left + j : left + j + span[1]]
        score += np.cos(2.0 * np.pi * (sums - target) / _PERIOD)
    best = np.unravel_index(np.argsort(score, axis=None)[::-1][:_CANDIDATES], span)
    return [(int(-(top + u) % TILE), int(-(left + v) % TILE)) for u, v in zip(*best, strict=True)]


@lru_cache(maxsize=4)
def _pilot_positions(key: bytes) -> list[tuple[IntArray, IntArray, IntArray, int]]:
    """For each coded bit the crop search fits: its tile rows, columns and signs, its target."""
    tile_rows, tile_cols, tile_bits, tile_signs = _tile(key)
    dithers = _dithers(key, np.arange(_SYNC_BITS), np.full(_SYNC_BITS, _PERIOD))
    pilots = []
    for bit, sign in enumerate(_pilot_signs()[:_SYNC_BITS]):
        mine = tile_bits == bit
        target = int(dithers[bit] + (sign < 0) * (_PERIOD // 2))
        pilots.append((tile_rows[mine], tile_cols[mine], tile_signs[mine], target))
    return pilots


def _words(key: bytes, label: bytes, count: int) -> npt.NDArray[np.uint64]:
    """``count`` pseudo-random 64-bit words: SHAKE-256 of the key and a label, big-endian."""
    stream = hashlib.shake_256(len(key).to_bytes(4, "big") + key + label).digest(8 * count)
    return np.frombuffer(stream, dtype=">u8").astype(np.uint64)


@lru_cache(maxsize=4)
def _tile(key: bytes) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Row, column, coded bit and sign of the used positions of a tile, in embedding order.

    Positions are ranked by a keyed permutation; rank r < 268·60 carries bit ``r mod 268``
    with a sign alternating on ``r div 268``, so each bit owns 60 positions scattered over
    the tile, 30 of each sign. The other 304 positions are never changed. The order is by
    bit, then rank.
    """
    ranks = np.empty(TILE * TILE, dtype=np.int64)
    ranks[np.argsort(_words(key, b"tile", TILE * TILE), kind="stable")] = np.arange(TILE * TILE)
    used = np.flatnonzero(ranks < _CODED_BITS * _PER_TILE)
    bits = ranks[used] % _CODED_BITS
    order = used[np.lexsort((ranks[used], bits))]
    rows, cols = np.divmod(order, TILE)
    return rows, cols, ranks[order] % _CODED_BITS, 1 - 2 * ((ranks[order] // _CODED_BITS) % 2)


@lru_cache(maxsize=8)
def _layout(shape: tuple[int, ...], key: bytes, origin: Origin | None = None) -> _Layout:
    """The groups of an image shape.

    With no ``origin`` the grid starts at the top-left pixel and tiles cut by the image edge
    are used, balanced in sign, exactly as :func:`embed` used them. With an ``origin``
    (the grid position of the top-left pixel) only whole tiles are used: the others were
    cut after embedding and their projections are meaningless.
    """
    rows, cols = shape
    oy, ox = origin or (0, 0)
    tile_rows, tile_cols, tile_bits, tile_signs = _tile(key)
    across = -(-(cols + ox) // TILE)
    tile_y, tile_x = np.divmod(np.arange(-(-(rows + oy) // TILE) * across), across)
    if origin is not None:
        whole = (tile_y * TILE >= oy) & ((tile_y + 1) * TILE <= rows + oy)
        whole &= (tile_x * TILE >= ox) & ((tile_x + 1) * TILE <= cols + ox)
        tile_y, tile_x = tile_y[whole], tile_x[whole]
    r = tile_y[:, None] * TILE - oy + tile_rows
    c = tile_x[:, None] * TILE - ox + tile_cols
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    group = (np.arange(tile_y.size)[:, None] * _CODED_BITS + tile_bits)[inside]
    signs = np.broadcast_to(tile_signs, inside.shape)[inside]
    keep = _balanced(group, signs)
    group = group[keep]
    starts = np.flatnonzero(np.diff(group, prepend=-1))
    sizes = np.diff(starts, append=group.size)
    bits = group[starts] % _CODED_BITS
    periods = sizes + 2 * (sizes // 4)
    return _Layout(
        pixels=(r * cols + c)[inside][keep],
        signs=signs[keep],
        starts=starts,
        sizes=sizes,
        periods=periods,
        dithers=_dithers(key, bits, periods),
        bits=bits,
    )


def _balanced(group: IntArray, signs: IntArray) -> npt.NDArray[np.bool_]:
    """Keep, in each group (``group`` sorted), as many + as - pixels: the first of each sign."""
    keep = np.zeros(group.size, dtype=bool)
    if group.size == 0:
        return keep
    count = {s: np.bincount(group[signs == s], minlength=int(group[-1]) + 1) for s in (1, -1)}
    pairs = np.minimum(count[1], count[-1])
    for sign in (1, -1):
        mine = np.flatnonzero(signs == sign)
        g = group[mine]
        keep[mine] = np.arange(g.size) - np.searchsorted(g, g) < pairs[g]
    return keep


def _dithers(key: bytes, bits: IntArray, periods: IntArray) -> IntArray:
    """Lattice offsets ``floor(u_b·Q)`` in ``[0, Q)``; ``u_b`` is a keyed fraction per coded bit.

    Sharing ``u_b`` between tiles keeps the dithers independent of where the grid starts.
    """
    fractions = _words(key, b"dither", _CODED_BITS) >> np.uint64(32)
    return (fractions[bits] * periods.astype(np.uint64) >> np.uint64(32)).astype(np.int64)
