from cryptocast.cli import main

main()
