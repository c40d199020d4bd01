from ganglion.cli import main

main()
