"""The test suite's own set-up."""
import pytest


@pytest.mark.xdist_group("suite_self_check")
def test_xdist_groups_are_applied(request):
    """``make test`` runs ``-n 2 --dist loadgroup``: tests marked ``xdist_group`` share a worker (one
    notebook kernel, one browser server, one default run at a time).  pytest 9.2 with pytest-xdist
    3.8 ignored the marks silently; this fails if that happens again."""
    if not getattr(request.config.option, "loadgroup", False):     # set on xdist's workers
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@suite_self_check"), request.node.nodeid
