from segprep.cli import main

main()
