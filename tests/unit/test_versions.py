"""Advertised API versions: implemented x known to kio x supported upstream."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from gateway.identity.registry import Authenticator
from gateway.protocol import codec
from gateway.protocol.versions import (
    API_VERSIONS,
    FETCH,
    FIND_COORDINATOR,
    IMPLEMENTED,
    LOCAL_APIS,
    METADATA,
    PRODUCE,
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
    VersionRange,
    advertised,
    api_versions_response,
    common,
    kio_range,
)
from gateway.session import Services
from tests.unit.harness import ScriptedPool, harness_config

FAST = settings(max_examples=100, deadline=None, database=None)
THOROUGH = settings(FAST, max_examples=200)


@st.composite
def version_ranges(draw: st.DrawFn) -> VersionRange:
    low = draw(st.integers(min_value=0, max_value=20))
    return VersionRange(low, draw(st.integers(min_value=low, max_value=25)))


# Upstream answers: any subset of the implemented APIs plus some the gateway does not
# serve, each with an arbitrary range.
upstream_tables = st.dictionaries(
    st.sampled_from(sorted(IMPLEMENTED)) | st.integers(min_value=0, max_value=100),
    version_ranges(),
    max_size=len(IMPLEMENTED) + 5,
)


def servable(api_key: int) -> VersionRange | None:
    known = kio_range(api_key)
    return IMPLEMENTED[api_key].intersect(known) if known is not None else None


@FAST
@given(upstream_tables)
def test_forwarded_apis_stay_within_the_upstream_range(
    upstream: dict[int, VersionRange],
) -> None:
    for api_key, offered in advertised(upstream).items():
        if api_key in LOCAL_APIS:
            continue
        theirs = upstream[api_key]
        assert theirs.min <= offered.min <= offered.max <= theirs.max


@THOROUGH
@given(upstream_tables)
def test_advertised_range_is_exactly_the_intersection(upstream: dict[int, VersionRange]) -> None:
    result = advertised(upstream)

    for api_key in IMPLEMENTED:
        expected = servable(api_key)
        if expected is not None and api_key not in LOCAL_APIS:
            theirs = upstream.get(api_key)
            expected = expected.intersect(theirs) if theirs is not None else None
        assert result.get(api_key) == expected


@FAST
@given(upstream_tables)
def test_apis_the_upstream_lacks_are_omitted(upstream: dict[int, VersionRange]) -> None:
    result = advertised(upstream)

    for api_key in set(IMPLEMENTED) - LOCAL_APIS - set(upstream):
        assert api_key not in result


@FAST
@given(upstream_tables)
def test_only_implemented_apis_are_advertised(upstream: dict[int, VersionRange]) -> None:
    assert set(advertised(upstream)) <= set(IMPLEMENTED)


@FAST
@given(upstream_tables)
def test_locally_answered_apis_are_kept_regardless_of_upstream(
    upstream: dict[int, VersionRange],
) -> None:
    result = advertised(upstream)

    for api_key in (API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, FIND_COORDINATOR):
        assert result[api_key] == servable(api_key)


@FAST
@given(upstream_tables, st.integers(min_value=0, max_value=4))
def test_api_versions_answer_a_client_decodes_lists_exactly_the_advertised_versions(
    upstream: dict[int, VersionRange], version: int
) -> None:
    table = advertised(upstream)

    encoded = codec.encode_response(7, api_versions_response(version, table))
    # Size and correlation id; ApiVersions answers have no header tags in any version.
    answer = codec.decode_response(API_VERSIONS, version, encoded, 4 + 4)

    assert answer.error_code == ErrorCode.none
    listed = {k.api_key: VersionRange(k.min_version, k.max_version) for k in answer.api_keys}
    assert listed == table
    # Whatever the upstream lacks, a client can still authenticate and find coordinators.
    for api_key in (API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, FIND_COORDINATOR):
        assert api_key in listed


def test_an_empty_upstream_leaves_only_locally_answered_apis() -> None:
    assert set(advertised({})) == LOCAL_APIS & set(IMPLEMENTED)


def test_disjoint_upstream_range_drops_the_api() -> None:
    implemented = IMPLEMENTED[PRODUCE]

    result = advertised({PRODUCE: VersionRange(implemented.max + 1, implemented.max + 5)})

    assert PRODUCE not in result


def test_upstream_narrower_than_implemented_narrows_the_offer() -> None:
    result = advertised({FETCH: VersionRange(5, 7), METADATA: VersionRange(0, 100)})

    assert result[FETCH] == VersionRange(5, 7)
    assert result[METADATA] == servable(METADATA)


def test_implemented_versions_exist_in_kio() -> None:
    for api_key, implemented in IMPLEMENTED.items():
        known = kio_range(api_key)
        assert known is not None, api_key
        assert known.intersect(implemented) is not None, api_key


def test_kio_range_of_unknown_api_is_none() -> None:
    assert kio_range(9999) is None


@FAST
@given(version_ranges(), version_ranges())
def test_intersection_is_symmetric_and_contained_in_both(a: VersionRange, b: VersionRange) -> None:
    both = a.intersect(b)

    assert both == b.intersect(a)
    for version in range(0, 26):
        assert (both is not None and version in both) == (version in a and version in b)


def test_version_range_contains_only_ints_within_bounds() -> None:
    versions = VersionRange(3, 5)

    assert 3 in versions
    assert 5 in versions
    assert 2 not in versions
    assert 6 not in versions
    assert "4" not in versions


@FAST
@given(upstream_tables, upstream_tables)
def test_two_clusters_share_exactly_what_both_list(
    one: dict[int, VersionRange], other: dict[int, VersionRange]
) -> None:
    both = common(one, other)
    assert both == common(other, one)
    for api_key, shared in both.items():
        assert shared.min in one[api_key] and shared.max in one[api_key]
        assert shared.min in other[api_key] and shared.max in other[api_key]
    for api_key in set(one) & set(other) - set(both):
        assert one[api_key].intersect(other[api_key]) is None
    assert set(both) <= set(one) & set(other)


def test_a_standby_cluster_narrows_what_is_advertised_once_its_table_is_known() -> None:
    config = harness_config({})
    active, standby = ScriptedPool(config), ScriptedPool(config)
    services = Services(config, active, Authenticator(config), standby=standby)
    standby.api_versions = {}
    assert services.versions == advertised(active.api_versions)
    older = dict(active.api_versions)
    older[FETCH] = VersionRange(older[FETCH].min, 11)
    older.pop(PRODUCE)
    standby.api_versions = older
    assert services.versions[FETCH].max == 11
    assert PRODUCE not in services.versions
    # Without a standby the active cluster's table alone decides.
    assert Services(config, active, Authenticator(config)).versions[FETCH].max > 11
