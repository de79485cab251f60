from proxygate.cli import main

main()
