from convergio.cli import main

main()
