"""Hypothesis properties beyond tests/test_integrity.py: whole-part pieces give S3's composite
ETag (checked against real SeaweedFS uploads too), the journal's range bookkeeping is
idempotent, and a resumed download never asks the server for a journaled byte."""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ego4d_dl.engine import EngineSettings
from ego4d_dl.etags import composite_etag, guess_layout
from ego4d_dl.files import part_path
from ego4d_dl.journal import Journal, journal_path
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.ranges import merge_ranges, missing_ranges, part_bounds, plan_pieces
from ego4d_dl.sandbox import Sandbox, SeededRelease, fake_bytes
from tests.support.examples import examples
from tests.support.faultproxy import FaultProxy
from tests.support.scenario import run_in_process
from tests.support.seed import MIB, Dataset, SourceFile, md5_hex, seed_dataset, unique_name

__all__: list[str] = []

Range = tuple[int, int]

layouts = st.lists(st.integers(1, 64), min_size=1, max_size=10).map(tuple)


def reference_composite(data: bytes, layout: tuple[int, ...]) -> str:
    """S3's multipart ETag, written from its definition and nothing of ours."""
    digests = b""
    offset = 0
    for size in layout:
        digests += hashlib.md5(data[offset : offset + size]).digest()
        offset += size
    return f"{hashlib.md5(digests).hexdigest()}-{len(layout)}"


def reference_bounds(layout: tuple[int, ...]) -> list[Range]:
    """The ``[start, stop)`` byte span of each part: running sums of the part sizes."""
    stops = list(itertools.accumulate(layout))
    return list(zip([0, *stops[:-1]], stops, strict=True))


# --- pure: pieces, layouts, ranges -----------------------------------------------------------


@given(layouts, st.data())
def test_whole_part_pieces_stream_the_composite_etag(
    layout: tuple[int, ...], data: st.DataObject
) -> None:
    """Fetched fresh with pieces at least as large as the largest part, every piece is one
    whole part, so the MD5s streamed while receiving them make the object's composite ETag."""
    content = data.draw(st.binary(min_size=sum(layout), max_size=sum(layout)))
    max_piece = data.draw(st.integers(max(layout), max(layout) + 50))
    pieces = plan_pieces(layout, [(0, sum(layout))], max_piece)
    assert all(p.whole_part for p in pieces)
    assert [(p.start, p.stop) for p in pieces] == reference_bounds(layout)
    streamed = [hashlib.md5(content[p.start : p.stop]).digest() for p in pieces]
    assert composite_etag(streamed) == reference_composite(content, layout)


@given(layouts)
def test_part_bounds_are_the_running_sums_of_the_part_sizes(layout: tuple[int, ...]) -> None:
    assert part_bounds(layout) == reference_bounds(layout)


@given(layouts, st.integers(1, 80), st.data())
def test_resuming_any_subset_of_pieces_tiles_the_rest(
    layout: tuple[int, ...], max_piece: int, data: st.DataObject
) -> None:
    """Whatever subset of a fresh plan's pieces was journaled, the resumed plan's pieces are
    sorted, disjoint, inside single parts, and cover exactly the pieces not journaled."""
    size = sum(layout)
    fresh = plan_pieces(layout, [(0, size)], max_piece)
    journaled = data.draw(st.lists(st.sampled_from(fresh), unique=True)) if fresh else []
    done = [(p.start, p.stop) for p in journaled]
    resumed = plan_pieces(layout, missing_ranges(size, done), max_piece)
    spans = [(p.start, p.stop) for p in resumed]
    assert spans == sorted(spans)
    for (_, a_stop), (b_start, _) in itertools.pairwise(spans):
        assert a_stop <= b_start
    expected = {i for p in fresh if p not in journaled for i in range(p.start, p.stop)}
    assert {i for a, b in spans for i in range(a, b)} == expected
    bounds = reference_bounds(layout)
    assert all(bounds[p.part][0] <= p.start < p.stop <= bounds[p.part][1] for p in resumed)


@given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 39))
def test_uniform_layouts_are_guessed_exactly(first: int, count: int, short: int) -> None:
    """Parts of one size and a shorter (or equal) last one: the guess from the first part's
    size is the layout itself."""
    last = first - short % first if count > 1 else first  # one part: the first is the last
    layout = (first,) * (count - 1) + (last,)
    assert guess_layout(sum(layout), first, count) == layout


@given(layouts)
def test_a_guess_is_always_a_uniform_layout_of_the_right_size(layout: tuple[int, ...]) -> None:
    """A guess may be wrong (the composite check then catches it), but it is always a layout
    the object could have: the right count and total, every part but the last equal."""
    guess = guess_layout(sum(layout), layout[0], len(layout))
    if guess is None:
        return
    assert len(guess) == len(layout) and sum(guess) == sum(layout)
    assert set(guess[:-1]) <= {layout[0]} and 0 < guess[-1] <= layout[0]


# --- the journal: merging recorded ranges is idempotent --------------------------------------


_journals = itertools.count()


@pytest.fixture(scope="module")
def journal_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ego4d-dl-props-") as name:
        yield Path(name)


@st.composite
def journaled_ranges(draw: st.DrawFn) -> tuple[int, list[Range], list[Range]]:
    """An object size, the pieces a run completed (disjoint, non-empty, as the engine cuts
    them), and the order in which their rows reached the journal: any order, each at least
    once (a flush retried after a failed commit writes its rows again)."""
    size = draw(st.integers(1, 400))
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=12))) if size > 1 else []
    spans = list(itertools.pairwise([0, *cuts, size]))
    completed = [s for s in spans if draw(st.booleans())]
    repeats = draw(st.lists(st.sampled_from(completed), max_size=20)) if completed else []
    return size, completed, draw(st.permutations([*completed, *repeats]))


@given(journaled_ranges())
# No deadline: each example writes and commits SQLite, whose fsyncs take what the disk and a
# busy machine give them.
@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_journal_ranges_merge_idempotently(
    journal_dir: Path, case: tuple[int, list[Range], list[Range]]
) -> None:
    """Whatever the order and repetition of the rows, the journal ends up holding exactly the
    completed ranges; the bytes it counts done are their union, and merging what it holds
    is a fixed point (merge(merge(x)) == merge(x)) that leaves the same bytes missing."""
    size, completed, written = case
    path = journal_dir / f"{next(_journals)}.sqlite"
    with Journal(path) as journal:
        object_id = journal.begin(
            dest="x",
            version=ObjectVersion(bucket="b", key="k", etag="e", size_bytes=size),
            layout=None,
            layout_exact=True,
            keep_ranges=True,
        )
        for start, stop in written:
            journal.add_range(object_id, start, stop, None)
            if start % 3 == 0:
                journal.commit()
        journal.commit()
        held = [(r.start, r.stop) for r in journal.ranges(object_id)]
        assert held == sorted(completed)
        merged = merge_ranges(held)
        assert merge_ranges(merged) == merged == merge_ranges([*held, *merged])
        assert journal.bytes_done(object_id) == sum(b - a for a, b in completed)
        assert missing_ranges(size, held) == missing_ranges(size, merged)


# --- against the real server ------------------------------------------------------------------


@st.composite
def multipart_layouts(draw: st.DrawFn) -> tuple[int, ...]:
    """Part sizes S3 accepts: every part but the last at least 5 MiB; kept small to upload."""
    count = draw(st.integers(1, 3))
    parts = [draw(st.integers(5 * MIB, 5 * MIB + 4096)) for _ in range(count - 1)]
    return (*parts, draw(st.integers(1, 5 * MIB + 4096)))


@given(multipart_layouts())
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_composite_etag_matches_the_servers_for_generated_layouts(
    sandbox: Sandbox, release: SeededRelease, layout: tuple[int, ...]
) -> None:
    """Upload with a generated part layout; the ETag SeaweedFS returns is the composite we
    compute from the part digests (a single-part upload: the plain MD5)."""
    data = fake_bytes(f"layout-{layout}", sum(layout))
    parts = layout if len(layout) > 1 else ()
    obj = sandbox.put_object(
        "ego4d-cmu", f"props/{unique_name('layout')}", data, part_sizes_bytes=parts
    )
    if len(layout) == 1:
        assert obj.etag == md5_hex(data)
        return
    digests = [hashlib.md5(data[a:b]).digest() for a, b in reference_bounds(layout)]
    assert obj.etag == composite_etag(digests) == reference_composite(data, layout)


@pytest.fixture(scope="module")
def resumable(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """One multipart object (three parts, the last short) to resume again and again."""
    name = unique_name("resume")
    source = SourceFile(
        name="obj.bin",
        data=fake_bytes(f"{name}/obj", 11 * MIB + 5),
        parts=(5 * MIB, 5 * MIB, MIB + 5),
    )
    return seed_dataset(sandbox, name, [source])


@pytest.fixture(scope="module")
def recording_proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.endpoint_url) as proxy:
        yield proxy


def _requested(proxy: FaultProxy, key: str, size: int) -> list[Range]:
    out = []
    for seen in proxy.seen:
        if seen.method != "GET" or seen.key != key:
            continue
        if seen.range is None:
            out.append((0, size))
            continue
        first, last = seen.range.removeprefix("bytes=").split("-")
        out.append((int(first), int(last) + 1))
    return out


@given(st.data())
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_resume_never_refetches_a_journaled_range(
    resumable: Dataset,
    recording_proxy: FaultProxy,
    aws_env: dict[str, str],
    data: st.DataObject,
) -> None:
    """A previous run left any set of journaled ranges (whole parts with their MD5, or any
    other span without one) and their bytes in the part file: the resumed run requests only
    bytes outside them, fetches exactly the rest, and the file verifies."""
    source = resumable.files["obj.bin"]
    size = len(source.data)
    layout = source.parts
    cuts = sorted(data.draw(st.sets(st.integers(1, size - 1), max_size=8)))
    edges = [0, *cuts, size]
    spans = list(itertools.pairwise(edges))
    journaled = [s for s in spans if data.draw(st.booleans(), label=f"keep {s}")]
    whole_parts = set(reference_bounds(layout))
    with tempfile.TemporaryDirectory(prefix="ego4d-dl-resume-") as name:
        out = Path(name)
        dest = resumable.dest(out, "obj.bin")
        dest.parent.mkdir(parents=True)
        with part_path(dest).open("wb") as part:
            part.truncate(size)
            for start, stop in journaled:
                part.seek(start)
                part.write(source.data[start:stop])
        with Journal(journal_path(out)) as journal:
            object_id = journal.begin(
                dest=str(dest.relative_to(out)),
                version=ObjectVersion(
                    bucket=resumable.bucket,
                    key=resumable.key("obj.bin"),
                    etag=resumable.etags["obj.bin"],
                    size_bytes=size,
                ),
                layout=layout,
                layout_exact=True,
                keep_ranges=True,
            )
            for start, stop in journaled:
                digest = hashlib.md5(source.data[start:stop]).digest()
                md5 = digest if (start, stop) in whole_parts else None
                journal.add_range(object_id, start, stop, md5)
        recording_proxy.reset_observations()
        result, _ = run_in_process(
            out, resumable.name, recording_proxy.url, settings=EngineSettings(max_piece_bytes=MIB)
        )

        summary = result.summary
        assert summary is not None and summary.ok, summary
        requested = _requested(recording_proxy, resumable.key("obj.bin"), size)
        for (start, stop), (a, b) in itertools.product(requested, journaled):
            assert max(start, a) >= min(stop, b), f"refetched {a}-{b} within {start}-{stop}"
        assert summary.bytes_fetched == size - sum(b - a for a, b in journaled)
        assert md5_hex(dest.read_bytes()) == md5_hex(source.data)
