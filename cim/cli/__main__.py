from cim.cli.app import main

main()
