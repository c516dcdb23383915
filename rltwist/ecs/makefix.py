"""Write a fix list for hot code reload: ``python -m rltwist.ecs.makefix``.

    python -m rltwist.ecs.makefix --id 20250301-01-rename-length \\
        --description "allow 14-wide names" --out hotfix/codefix rltwist.game.rolesystem

Run it in the tree holding the fixed sources (the one the hotfix package is built from):
each module name is resolved like an import and the sha256 of its source file goes into
the list, so every node applies the list only once its files hold exactly those bytes.
Without ``--out`` the list is printed; with it, ``<out>/<id>.toml`` is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from rltwist.ecs.hotfix import make_fix_list, write_fix_list


def main(argv: list[str] | None = None) -> int:
    """Parse *argv*, write or print the list; return the exit status."""
    p = argparse.ArgumentParser(prog="python -m rltwist.ecs.makefix",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--id", required=True, help="fix id, e.g. 20250301-01-what")
    p.add_argument("--description", default="")
    p.add_argument("--out", metavar="DIR", help="codefix directory to write <id>.toml into")
    p.add_argument("modules", nargs="+", help="dotted names of the fixed modules")
    args = p.parse_args(argv)
    try:
        if args.out:
            path = write_fix_list(args.out, args.id, args.modules, args.description)
            print(path)
        else:
            sys.stdout.write(make_fix_list(args.id, args.modules, args.description))
    except (ImportError, OSError) as e:
        print(f"makefix: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
