from rltwist.chaos.cli import main

main()
