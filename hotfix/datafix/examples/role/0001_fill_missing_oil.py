"""Example data fix (examples/ is never loaded; copy it to hotfix/datafix/role/ to ship).

Runs once per role entity whose version is below 1: on load, on login, or online with
POST /datafix {"kinds": ["role"]}.
"""

TARGET_VERSION = 1
DESCRIPTION = "roles created before 2025-03-01 have no oil"


def fix(entity):
    if "oil" not in entity:
        entity["oil"] = 0
