"""airbyte-cdk's standard source tests against the built Postgate binary.

`SourceTestSuiteBase` (airbyte_cdk.test.standard_tests) runs each job in-process through
`AirbyteEntrypoint`; `create_connector` returns `PostgateSource`, a `Source` whose commands run
the executable (see postgate_adapter.py). Scenarios come from acceptance-test-config.yml in this
directory (the suite's connector root), with configs the `conformance` fixture writes for a hostile
schema it creates in the lab.

The suite's Docker image tests do not apply to an executable, so they are removed from this class
(rather than left to skip): `docker` is not what is under test here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airbyte_cdk.test.models import ConnectorTestScenario
from airbyte_cdk.test.standard_tests import SourceTestSuiteBase
from boltons.typeutils import classproperty

from postgate_adapter import PostgateSource, postgate_binary

CLIENTS_DIR = Path(__file__).resolve().parent


@pytest.mark.usefixtures("conformance")
class TestPostgateStandardSource(SourceTestSuiteBase):
    """The standard source suite, with Postgate plugged in as an executable."""

    @classmethod
    def get_connector_root_dir(cls) -> Path:
        return CLIENTS_DIR

    @classproperty
    def connector_name(cls) -> str:  # type: ignore[override]
        return "source-postgate"

    @classmethod
    def create_connector(cls, scenario: ConnectorTestScenario | None) -> PostgateSource:
        return PostgateSource(postgate_binary())

    # Image-only tests (they build and run a Docker image from metadata.yaml).
    test_docker_image_build_and_spec = None
    test_docker_image_spec_backward_compatibility = None
    test_docker_image_build_and_check = None
    test_docker_image_build_and_config_matches_spec = None
    test_docker_image_build_and_discover = None
    test_docker_image_build_and_read = None


def test_suite_collects_the_scenarios() -> None:
    """The acceptance-test-config.yml scenarios are all collected (guards against a silent no-op)."""
    ids = sorted(s.id for s in TestPostgateStandardSource.get_scenarios())
    assert ids == sorted(
        ["config", "config_cdc", "invalid_password", "missing_database", "untrusted_ca"]
    )
    by_id = {s.id: s for s in TestPostgateStandardSource.get_scenarios()}
    assert by_id["config"].runs("spec", "check", "discover", "read")
    assert by_id["invalid_password"].expected_outcome.expect_exception()
